/**
 * One OS timer for all the pure state machines of a tunnel. Each machine says when it next has
 * work (`pollAt`); after any input the host calls `kick()`, which coalesces into one microtask
 * per turn and re-arms the timer only when a deadline moved earlier. This keeps per-packet cost
 * to a comparison instead of a clearTimeout/setTimeout pair.
 *
 * @module
 */

export interface Pollable {
  pollAt(): number;
  tick(now: number): void;
}

export class Scheduler {
  readonly #machines: Pollable[];
  readonly #clock: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedAt = Infinity;
  #kicked = false;
  #closed = false;

  constructor(machines: Pollable[], clock: () => number = () => performance.now()) {
    this.#machines = machines;
    this.#clock = clock;
  }

  now(): number {
    return this.#clock();
  }

  add(machine: Pollable): void {
    this.#machines.push(machine);
    this.kick();
  }

  /** Deadlines may have changed: re-arm at the end of this turn. */
  kick(): void {
    if (this.#kicked || this.#closed) return;
    this.#kicked = true;
    queueMicrotask(() => {
      this.#kicked = false;
      this.#arm();
    });
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    if (this.#closed) return;
    let next = Infinity;
    for (const m of this.#machines) next = Math.min(next, m.pollAt());
    if (next >= this.#armedAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedAt = next;
    if (next === Infinity) {
      this.#timer = undefined;
      return;
    }
    const delay = Math.max(0, Math.ceil(next - this.#clock()));
    const timer = setTimeout(() => this.#fire(), delay);
    // The tunnel's timers alone must not keep a finished program alive.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = this.#clock();
    for (const m of this.#machines) {
      if (m.pollAt() <= now) m.tick(now);
    }
    this.#arm();
  }
}
