// Cap'n Proto RPC over one WebSocket: one RPC message per binary WebSocket frame, as the host's
// capnp::WebSocketMessageStream speaks it.
//
// capnp-es 0.0.16 ships no WebSocket transport, and its stream transport keeps only one
// pending read (messages that arrive together are lost). WebSocketTransport queues every
// frame until the Conn asks for it. capnp-es also never fails calls in flight when the
// connection closes; RpcConnection does: every in-flight question is rejected with
// ConnectionClosed, and `closed` resolves so callers can race their calls against it.
import { Conn, Message, type Transport } from "capnp-es";
import { Message as RpcMessage } from "capnp-es/capnp/rpc";
import { Gateway, type Gateway$Client } from "./gen/client";

export class ConnectionClosed extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "ConnectionClosed";
  }
}

class WebSocketTransport implements Transport {
  private readonly queue: RpcMessage[] = [];
  private waiting: { resolve: (m: RpcMessage) => void; reject: (e?: unknown) => void } | null =
    null;
  private ended = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly onEnd: (reason: string) => void,
  ) {
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => {
      if (this.ended) return;
      if (!(event.data instanceof ArrayBuffer)) {
        this.end("the server sent a text frame");
        return;
      }
      let message: RpcMessage;
      try {
        message = new Message(event.data, false).getRoot(RpcMessage);
      } catch (error) {
        this.end(`unreadable message from the server: ${String(error)}`);
        return;
      }
      if (this.waiting) {
        const waiting = this.waiting;
        this.waiting = null;
        waiting.resolve(message);
      } else {
        this.queue.push(message);
      }
    });
    socket.addEventListener("close", (event) =>
      this.end(event.reason || `connection closed (code ${event.code})`),
    );
    socket.addEventListener("error", () => this.end("connection failed"));
  }

  sendMessage(message: RpcMessage): void {
    // After the end, messages are dropped: throwing here would surface inside capnp-es (a
    // return for a call being answered while the socket closed); the calls waiting on answers
    // are failed by RpcConnection instead.
    if (this.ended || this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(message.segment.message.toArrayBuffer());
  }

  recvMessage(): Promise<RpcMessage> {
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    // Rejecting with undefined is how a capnp-es Conn's read loop learns to stop quietly.
    if (this.ended) return Promise.reject();
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  close(): void {
    this.end("closed by the client");
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.socket.readyState === WebSocket.OPEN || this.socket.readyState === WebSocket.CONNECTING) {
      this.socket.close(1000);
    }
    if (this.waiting) {
      const waiting = this.waiting;
      this.waiting = null;
      waiting.reject();
    }
    this.onEnd(reason);
  }
}

// One connection to the host's /rpc endpoint and its Gateway bootstrap.
export class RpcConnection {
  readonly gateway: Gateway$Client;
  // Resolves (never rejects) with the reason once the connection is gone.
  readonly closed: Promise<ConnectionClosed>;
  private readonly conn: Conn;
  private readonly transport: WebSocketTransport;

  private constructor(socket: WebSocket) {
    let markClosed!: (error: ConnectionClosed) => void;
    this.closed = new Promise((resolve) => (markClosed = resolve));
    this.transport = new WebSocketTransport(socket, (reason) => {
      const error = new ConnectionClosed(reason);
      this.failQuestions(error);
      markClosed(error);
    });
    this.conn = new Conn(this.transport);
    // A message the Conn cannot handle ends the connection; the app reconnects.
    this.conn.onError = () => this.transport.close();
    this.gateway = this.conn.bootstrap(Gateway);
  }

  // Opens the WebSocket; resolves once it is open, rejects if it cannot be.
  static open(url: string): Promise<RpcConnection> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      socket.binaryType = "arraybuffer";
      const failed = () => reject(new ConnectionClosed(`cannot connect to ${url}`));
      socket.addEventListener("error", failed, { once: true });
      socket.addEventListener(
        "open",
        () => {
          socket.removeEventListener("error", failed);
          resolve(new RpcConnection(socket));
        },
        { once: true },
      );
    });
  }

  // Runs one call; rejects with ConnectionClosed if the connection ends first.
  async call<T>(start: () => Promise<T>): Promise<T> {
    const outcome = await Promise.race([
      (async () => ({ value: await start() }))(),
      this.closed.then((error) => ({ error })),
    ]);
    if ("error" in outcome) throw outcome.error;
    return outcome.value;
  }

  close(): void {
    this.transport.close();
  }

  private failQuestions(error: ConnectionClosed): void {
    for (const question of this.conn.questions) {
      if (question && question.state === 0 /* IN_PROGRESS */) {
        try {
          question.reject(error);
        } catch {
          // Already settled meanwhile; nothing to fail.
        }
      }
    }
  }
}
