/**
 * A binary min-heap of timer owners keyed by their deadline, where each owner remembers its
 * position so its deadline can move in O(log n) without searching. `pollAt()` is the top; a
 * tick pops only what is due, so thousands of idle connections cost nothing per packet.
 *
 * @module
 */

/** Something with one deadline in the heap. `heapIndex` is -1 when not in a heap. */
export interface TimerItem {
  deadline: number;
  heapIndex: number;
}

export class TimerHeap<T extends TimerItem> {
  readonly #items: T[] = [];

  get size(): number {
    return this.#items.length;
  }

  /** The earliest deadline, or Infinity. */
  peekDeadline(): number {
    const top = this.#items[0];
    return top === undefined ? Infinity : top.deadline;
  }

  /** Sets `item`'s deadline, inserting, moving or (for Infinity) removing it. */
  set(item: T, deadline: number): void {
    if (deadline === Infinity) {
      this.remove(item);
      item.deadline = Infinity;
      return;
    }
    if (item.heapIndex < 0) {
      item.deadline = deadline;
      item.heapIndex = this.#items.length;
      this.#items.push(item);
      this.#up(item.heapIndex);
      return;
    }
    const old = item.deadline;
    if (old === deadline) return;
    item.deadline = deadline;
    if (deadline < old) this.#up(item.heapIndex);
    else this.#down(item.heapIndex);
  }

  remove(item: T): void {
    const i = item.heapIndex;
    if (i < 0) return;
    const items = this.#items;
    const last = items.pop()!;
    item.heapIndex = -1;
    if (last === item) return;
    items[i] = last;
    last.heapIndex = i;
    this.#down(i);
    this.#up(last.heapIndex);
  }

  /** Removes and returns the earliest item if its deadline is at or before `now`. */
  popDue(now: number): T | undefined {
    const top = this.#items[0];
    if (top === undefined || top.deadline > now) return undefined;
    this.remove(top);
    return top;
  }

  #up(i: number): void {
    const items = this.#items;
    const item = items[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = items[p]!;
      if (parent.deadline <= item.deadline) break;
      items[i] = parent;
      parent.heapIndex = i;
      i = p;
    }
    items[i] = item;
    item.heapIndex = i;
  }

  #down(i: number): void {
    const items = this.#items;
    const n = items.length;
    const item = items[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && items[r]!.deadline < items[l]!.deadline ? r : l;
      const child = items[c]!;
      if (child.deadline >= item.deadline) break;
      items[i] = child;
      child.heapIndex = i;
      i = c;
    }
    items[i] = item;
    item.heapIndex = i;
  }
}
