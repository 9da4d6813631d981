// The HTTP proxy in process, between two of our tunnels on loopback (no root needed): what the
// origin receives and what the client gets back, header by header, and every error status.
import assert from "node:assert/strict";
import { readAll } from "./_support/bytes.ts";
import { ProxyServer } from "../core/host/proxy/mod.ts";
import { endToEnd, parseHead } from "../core/host/proxy/http.ts";
import { Credentials } from "../core/host/proxy/io.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";
import { FAR4, withLoopbackPair, writeAll } from "./_support/forward_pair.ts";

const enc = new TextEncoder(), dec = new TextDecoder();

Deno.test("parseHead and endToEnd: hop-by-hop fields go, Transfer-Encoding stays", () => {
  const head = parseHead(
    "GET http://x/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Private\r\n" +
      "X-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n" +
      "Upgrade: h2c\r\nProxy-Authorization: Basic eDp5\r\nTransfer-Encoding: chunked\r\n" +
      "Accept:  */*  \r\n\r\n",
  );
  assert.equal(head.startLine, "GET http://x/ HTTP/1.1");
  assert.deepEqual(endToEnd(head.fields), [
    { name: "Transfer-Encoding", value: "chunked" },
    { name: "Accept", value: "*/*" },
  ]);
  assert.throws(() => parseHead("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), /folding/);
  assert.throws(() => parseHead("GET / HTTP/1.1\r\nBad Name: b\r\n\r\n"), /malformed/);
});

/**
 * An origin on the far tunnel's port 80: records each request head (and a body sent with
 * Content-Length or chunked), answers with hop-by-hop fields of its own, then closes.
 */
function origin(far: Tunnel): { heads: string[]; bodies: string[]; close(): void } {
  const l = far.listen({ port: 80 });
  const heads: string[] = [], bodies: string[] = [];
  void (async () => {
    for await (const c of l) {
      let buf = "";
      const chunk = new Uint8Array(65536);
      while (!buf.includes("\r\n\r\n")) {
        const n = await c.read(chunk);
        if (n === null) break;
        buf += dec.decode(chunk.subarray(0, n));
      }
      const end = buf.indexOf("\r\n\r\n") + 4;
      const head = buf.slice(0, end);
      let body = buf.slice(end);
      heads.push(head);
      const length = /content-length: (\d+)/i.exec(head);
      const chunked = /transfer-encoding: chunked/i.test(head);
      while (
        (length && body.length < Number(length[1])) || (chunked && !body.endsWith("0\r\n\r\n"))
      ) {
        const n = await c.read(chunk);
        if (n === null) break;
        body += dec.decode(chunk.subarray(0, n));
      }
      bodies.push(body);
      const payload = `origin saw ${head.split("\r\n")[0]}`;
      await c.writeAll(enc.encode(
        `HTTP/1.1 200 OK\r\nContent-Length: ${payload.length}\r\nConnection: keep-alive, X-Hop\r\n` +
          `X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-End: kept\r\n\r\n${payload}`,
      ));
      await c.closeWrite();
      c.close();
    }
  })();
  return { heads, bodies, close: () => l.close() };
}

async function withHttpProxy(
  fn: (port: number, far: Tunnel) => Promise<void>,
  opts: { credentials?: Credentials } = {},
): Promise<void> {
  await withLoopbackPair(async ({ near, far }) => {
    const proxy = ProxyServer.start(near, { http: [{ hostname: "127.0.0.1", port: 0 }], ...opts });
    try {
      await fn(proxy.listening[0]!.port, far);
    } finally {
      await proxy.close();
    }
  });
}

/**
 * Sends `raw` to the proxy and reads the whole answer (the proxy closes after one); with
 * `halfClose`, ends our direction after sending.
 */
async function ask(port: number, raw: string, halfClose = false): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(c, enc.encode(raw));
  if (halfClose) await c.closeWrite();
  const out = dec.decode(await readAll(c));
  c.close();
  return out;
}

Deno.test("HTTP forward proxy: origin-form upstream, Host from the URI, hop-by-hop removed", async () => {
  await withHttpProxy(async (port, far) => {
    const o = origin(far);
    try {
      const answer = await ask(
        port,
        `GET http://${FAR4}/path?q=1 HTTP/1.1\r\nHost: wrong.example\r\n` +
          "Proxy-Connection: keep-alive\r\nConnection: X-Custom\r\nX-Custom: a\r\nX-Keep: b\r\n" +
          "Proxy-Authorization: Basic eDp5\r\n\r\n",
      );
      const sent = o.heads[0]!;
      assert.match(sent, /^GET \/path\?q=1 HTTP\/1\.1\r\n/);
      assert.match(sent, new RegExp(`\r\nHost: ${FAR4.replaceAll(".", "\\.")}\r\n`));
      assert.match(sent, /\r\nX-Keep: b\r\n/);
      assert.match(sent, /\r\nVia: 1\.1 wrapguard\r\n/);
      assert.match(sent, /\r\nConnection: close\r\n/);
      for (const gone of [/wrong\.example/, /Proxy-Connection/i, /X-Custom/, /Proxy-Auth/i]) {
        assert.doesNotMatch(sent, gone);
      }
      const [head, body] = answer.split("\r\n\r\n");
      assert.match(head!, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head!, /\r\nX-End: kept/);
      assert.match(head!, /\r\nConnection: close/);
      assert.doesNotMatch(head!, /X-Hop|Keep-Alive|keep-alive/);
      assert.equal(body, "origin saw GET /path?q=1 HTTP/1.1");
    } finally {
      o.close();
    }
  });
});

Deno.test("HTTP forward proxy: request bodies pass as sent, chunked included", async () => {
  await withHttpProxy(async (port, far) => {
    const o = origin(far);
    try {
      const chunked = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
      const answer = await ask(
        port,
        `POST http://${FAR4}:80/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n` +
          chunked,
      );
      assert.match(answer, /origin saw POST \/up HTTP\/1\.1$/);
      assert.match(o.heads[0]!, /\r\nTransfer-Encoding: chunked\r\n/);
      assert.equal(o.bodies[0], chunked);
    } finally {
      o.close();
    }
  });
});

Deno.test("HTTP CONNECT: 200, then bytes both ways, early data included", async () => {
  await withHttpProxy(async (port, far) => {
    const l = far.listen({ port: 7 });
    void (async () => {
      for await (const c of l) void c.readable.pipeTo(c.writable).catch(() => {});
    })();
    try {
      // The request and the first bytes of the tunnelled protocol in one write.
      const answer = await ask(
        port,
        `CONNECT ${FAR4}:7 HTTP/1.1\r\nHost: ${FAR4}:7\r\n\r\nearly bytes`,
        true,
      );
      assert.equal(answer, "HTTP/1.1 200 Connection established\r\n\r\nearly bytes");
    } finally {
      l.close();
    }
  });
});

Deno.test("HTTP proxy errors: 400, 501, 502 (refused, unrouted, unknown name), 431", async () => {
  await withHttpProxy(async (port) => {
    const status = async (raw: string) => Number((await ask(port, raw)).split(" ")[1]);
    assert.equal(await status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert.equal(await status("nonsense\r\n\r\n"), 400);
    assert.equal(await status("GET https://x/ HTTP/1.1\r\n\r\n"), 501);
    assert.equal(await status(`GET http://${FAR4}:4999/ HTTP/1.1\r\n\r\n`), 502);
    assert.equal(await status("GET http://10.10.0.1/ HTTP/1.1\r\n\r\n"), 502);
    assert.equal(await status("CONNECT svc.wg.test:443 HTTP/1.1\r\n\r\n"), 502);
    assert.equal(await status("CONNECT fd09::1:443 HTTP/1.1\r\n\r\n"), 400);
    const big = `GET http://${FAR4}/ HTTP/1.1\r\nX: ${"a".repeat(70_000)}\r\n\r\n`;
    assert.equal(await status(big), 431);
  });
});

Deno.test("HTTP proxy with credentials: 407 and a challenge, then Basic passes", async () => {
  const credentials = await Credentials.parse("alice:s3cret\n", "<test>");
  await withHttpProxy(async (port, far) => {
    const o = origin(far);
    try {
      const req = (auth?: string) =>
        ask(
          port,
          `GET http://${FAR4}/ HTTP/1.1\r\n${
            auth ? `Proxy-Authorization: Basic ${btoa(auth)}\r\n` : ""
          }\r\n`,
        );
      for (const auth of [undefined, "alice:wrong", "mallory:s3cret", "alice"]) {
        const r = await req(auth);
        assert.match(r, /^HTTP\/1\.1 407 /, String(auth));
        assert.match(r, /\r\nProxy-Authenticate: Basic realm="wrapguard"/);
      }
      assert.equal(o.heads.length, 0);
      assert.match(await req("alice:s3cret"), /^HTTP\/1\.1 200 OK/);
      // The credentials are the proxy's: they are not passed on.
      assert.doesNotMatch(o.heads[0]!, /Proxy-Authorization/i);
    } finally {
      o.close();
    }
  }, { credentials });
});
