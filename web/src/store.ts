// What the browser keeps, in the IndexedDB database "switchboard" (one account per browser
// profile):
//
//  account   the one registered phone and its device key (32 bytes from Gateway.verify)
//  messages  every message of every chat, incoming and outgoing; its `uid` is the dedup key:
//            "in <sender> <clientMsgId>" for received messages (a message the server delivers
//            again, even under a new id after a host crash, lands on the same record),
//            "out <clientMsgId>" for sent ones. Index `sid`: the server's id.
//  chats     one row per chat: title, last message, unread count
//
// putIncoming() resolves only once the transaction is durable (committed), so Inbox.deliver
// returns after the messages are stored.

export type Tick = "pending" | "sent" | "delivered" | "read";

export interface Account {
  phone: string;
  key: Uint8Array;
  deviceName: string;
}

export interface StoredMessage {
  uid: string;
  chat: string; // "p:+15550001" for a direct chat, "g:12" for a group
  dir: "in" | "out";
  from: string;
  to: string; // phone for direct, "" for group
  group: string; // "0" for direct; decimal group id
  clientMsgId: string;
  sid: string; // server id (decimal), "" until the send returned
  body: string;
  ts: number; // ms since the epoch (server time once known)
  tick: Tick; // outgoing only
  readSent: boolean; // incoming: a read receipt went out
}

export interface Chat {
  chat: string;
  title: string;
  lastBody: string;
  lastTs: number;
  lastDir: "in" | "out" | "";
  unread: number;
}

const tickRank: Record<Tick, number> = { pending: 0, sent: 1, delivered: 2, read: 3 };

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    tx.onerror = () => reject(tx.error ?? new Error("transaction failed"));
  });
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

// A new message in a chat (made with `title` if new): its last message, time and unread count.
async function bumpChat(chats: IDBObjectStore, m: StoredMessage, title: string, unread: number) {
  const chat: Chat = (await request(chats.get(m.chat))) ?? {
    chat: m.chat,
    title,
    lastBody: "",
    lastTs: 0,
    lastDir: "",
    unread: 0,
  };
  chat.lastBody = m.body;
  chat.lastTs = Math.max(chat.lastTs, m.ts);
  chat.lastDir = m.dir;
  chat.unread += unread;
  chats.put(chat);
}

export class Store {
  private constructor(private readonly db: IDBDatabase) {}

  static open(name = "switchboard"): Promise<Store> {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () => {
        const db = open.result;
        db.createObjectStore("account");
        const messages = db.createObjectStore("messages", { keyPath: "uid" });
        messages.createIndex("sid", "sid");
        messages.createIndex("chat", "chat");
        messages.createIndex("tick", "tick");
        db.createObjectStore("chats", { keyPath: "chat" });
      };
      open.onsuccess = () => resolve(new Store(open.result));
      open.onerror = () => reject(open.error);
    });
  }

  async account(): Promise<Account | undefined> {
    const tx = this.db.transaction("account");
    return request(tx.objectStore("account").get("me"));
  }

  async setAccount(account: Account | undefined): Promise<void> {
    const tx = this.db.transaction(["account", "messages", "chats"], "readwrite");
    if (account) {
      const previous = await request(tx.objectStore("account").get("me"));
      // A different phone in this browser starts from an empty history.
      if (previous && previous.phone !== account.phone) {
        tx.objectStore("messages").clear();
        tx.objectStore("chats").clear();
      }
      tx.objectStore("account").put(account, "me");
    } else {
      tx.objectStore("account").delete("me");
    }
    return done(tx);
  }

  async chats(): Promise<Chat[]> {
    const tx = this.db.transaction("chats");
    const all: Chat[] = await request(tx.objectStore("chats").getAll());
    return all.sort((a, b) => b.lastTs - a.lastTs);
  }

  async messages(chat: string): Promise<StoredMessage[]> {
    const tx = this.db.transaction("messages");
    const all: StoredMessage[] = await request(
      tx.objectStore("messages").index("chat").getAll(chat),
    );
    return all.sort((a, b) => a.ts - b.ts || a.uid.localeCompare(b.uid));
  }

  async pendingSends(): Promise<StoredMessage[]> {
    const tx = this.db.transaction("messages");
    const all: StoredMessage[] = await request(
      tx.objectStore("messages").index("tick").getAll("pending"),
    );
    return all.filter((m) => m.dir === "out").sort((a, b) => a.ts - b.ts);
  }

  async ensureChat(chat: string, title: string): Promise<void> {
    const tx = this.db.transaction("chats", "readwrite");
    const chats = tx.objectStore("chats");
    const existing: Chat | undefined = await request(chats.get(chat));
    if (!existing) {
      chats.put({ chat, title, lastBody: "", lastTs: Date.now(), lastDir: "", unread: 0 });
    } else if (existing.title !== title && title) {
      chats.put({ ...existing, title });
    }
    return done(tx);
  }

  // Stores received messages and bumps their chats; resolves once committed. Returns the
  // messages that were new (repeats, by uid or by server id, are dropped).
  async putIncoming(
    incoming: StoredMessage[],
    titleOf: (m: StoredMessage) => string,
    isOpen: (chat: string) => boolean,
  ): Promise<StoredMessage[]> {
    // Strict: committed to disk before deliver returns (the server then forgets them).
    const tx = this.db.transaction(["messages", "chats"], "readwrite", { durability: "strict" });
    const messages = tx.objectStore("messages");
    const chats = tx.objectStore("chats");
    const fresh: StoredMessage[] = [];
    for (const m of incoming) {
      const byUid = await request(messages.getKey(m.uid));
      const bySid = await request(messages.index("sid").getKey(m.sid));
      if (byUid !== undefined || bySid !== undefined) continue;
      messages.put(m);
      fresh.push(m);
      await bumpChat(chats, m, titleOf(m), isOpen(m.chat) ? 0 : 1);
    }
    await done(tx);
    return fresh;
  }

  async putOutgoing(m: StoredMessage, title: string): Promise<void> {
    const tx = this.db.transaction(["messages", "chats"], "readwrite");
    tx.objectStore("messages").put(m);
    await bumpChat(tx.objectStore("chats"), m, title, 0);
    return done(tx);
  }

  // The send returned: the server id and time, and the "sent" tick, or "delivered" when the
  // reply carried that one too (ticks only go up).
  // Ticks for server ids this phone does not know yet: a receipt may arrive just before
  // the reply to its send (the reader's receipt and the send's reply travel separately).
  // markSent applies them. Bounded: the oldest go first.
  private earlyTicks = new Map<string, Tick>();

  async markSent(
    uid: string,
    sid: string,
    ts: number,
    tick: "sent" | "delivered",
  ): Promise<StoredMessage | undefined> {
    const tx = this.db.transaction("messages", "readwrite");
    const messages = tx.objectStore("messages");
    const m: StoredMessage | undefined = await request(messages.get(uid));
    if (!m) return undefined;
    m.sid = sid;
    m.ts = ts;
    if (tickRank[m.tick] < tickRank[tick]) m.tick = tick;
    const early = this.earlyTicks.get(sid);
    if (early !== undefined) {
      this.earlyTicks.delete(sid);
      if (tickRank[m.tick] < tickRank[early]) m.tick = early;
    }
    messages.put(m);
    await done(tx);
    return m;
  }

  // Receipts for messages this phone sent; returns the updated messages.
  async applyReceipts(receipts: { sid: string; tick: Tick }[]): Promise<StoredMessage[]> {
    const tx = this.db.transaction("messages", "readwrite");
    const messages = tx.objectStore("messages");
    const changed: StoredMessage[] = [];
    for (const r of receipts) {
      const m: StoredMessage | undefined = await request(messages.index("sid").get(r.sid));
      if (!m) {
        const known = this.earlyTicks.get(r.sid);
        if (known === undefined || tickRank[known] < tickRank[r.tick]) {
          this.earlyTicks.delete(r.sid);
          this.earlyTicks.set(r.sid, r.tick);
          if (this.earlyTicks.size > 1000) {
            this.earlyTicks.delete(this.earlyTicks.keys().next().value as string);
          }
        }
        continue;
      }
      if (m.dir !== "out" || tickRank[m.tick] >= tickRank[r.tick]) continue;
      m.tick = r.tick;
      messages.put(m);
      changed.push(m);
    }
    await done(tx);
    return changed;
  }

  // Opening a chat: its unread count goes to zero; returns received messages not yet read.
  async markChatRead(chat: string): Promise<StoredMessage[]> {
    const tx = this.db.transaction(["messages", "chats"], "readwrite");
    const chats = tx.objectStore("chats");
    const row: Chat | undefined = await request(chats.get(chat));
    if (row && row.unread !== 0) chats.put({ ...row, unread: 0 });
    const all: StoredMessage[] = await request(
      tx.objectStore("messages").index("chat").getAll(chat),
    );
    const unread = all.filter((m) => m.dir === "in" && !m.readSent && m.sid !== "");
    await done(tx);
    return unread;
  }

  async markReadSent(uids: string[]): Promise<void> {
    const tx = this.db.transaction("messages", "readwrite");
    const messages = tx.objectStore("messages");
    for (const uid of uids) {
      const m: StoredMessage | undefined = await request(messages.get(uid));
      if (m && !m.readSent) messages.put({ ...m, readSent: true });
    }
    return done(tx);
  }
}
