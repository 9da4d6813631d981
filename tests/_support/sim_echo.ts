/**
 * Echo traffic for TCP layers on a {@link SimNetwork}: a server that sends back what each
 * connection sends and closes after its FIN, and a client that writes its data, half-closes
 * and keeps what comes back. The end-to-end and RACK tests drive many of these at once through
 * a congested link.
 *
 * @module
 */
import type { TcpLayer } from "../../core/netstack/tcp.ts";
import type { IpBytes } from "../../core/wire/addr.ts";
import { concat } from "./bytes.ts";
import type { SimNetwork } from "./tcp_script.ts";

/** Echoes every connection on `port`; stops reading while a write waits for room. */
export function echoServer(layer: TcpLayer, port: number): void {
  const listener = layer.listen({ port });
  listener.onAccept = () => {
    for (let c = listener.accept(); c; c = listener.accept()) {
      const conn = c;
      let pending: Uint8Array = new Uint8Array(0);
      const pump = () => {
        for (;;) {
          if (pending.length > 0) {
            pending = pending.subarray(conn.write(pending));
            if (pending.length > 0) return; // wait for onWritable
          }
          const got = conn.read(new Uint8Array(8192));
          if (got.length === 0) break;
          pending = got;
        }
        if (conn.readableEnded && pending.length === 0) conn.close();
      };
      conn.onReadable = conn.onWritable = conn.onEnd = pump;
      pump();
    }
  };
}

/** One client's outcome, filled in as the simulation runs. */
export interface EchoClient {
  closed: boolean;
  /** The error code the connection closed with, if any. */
  error?: string;
  /** Everything echoed back so far. */
  received(): Uint8Array;
}

/** Connects to `dst:port`, writes `data` in 4 KiB pieces, half-closes, and reads to the end. */
export function echoClient(
  layer: TcpLayer,
  net: SimNetwork,
  dst: IpBytes,
  port: number,
  data: Uint8Array,
): EchoClient {
  const conn = layer.connect(net.now, { dst, dstPort: port });
  const back: Uint8Array[] = [];
  const state: EchoClient = { closed: false, received: () => concat(back) };
  let written = 0;
  const pump = () => {
    while (written < data.length) {
      const n = conn.write(data.subarray(written, Math.min(data.length, written + 4096)));
      if (n === 0) break;
      written += n;
    }
    if (written === data.length && conn.state === "ESTABLISHED") conn.shutdownWrite();
  };
  const drain = () => {
    for (let got = conn.read(); got.length > 0; got = conn.read()) back.push(got);
    if (conn.readableEnded) conn.close();
  };
  conn.onOpen = conn.onWritable = pump;
  conn.onReadable = conn.onEnd = drain;
  conn.onClose = (e) => {
    state.closed = true;
    state.error = e?.code;
  };
  return state;
}
