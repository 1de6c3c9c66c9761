// Switchboard Web: the app. One page, no framework: plain DOM, IndexedDB (store.ts) and
// Cap'n Proto RPC over a WebSocket to the host's /rpc (rpc.ts).
//
// Life of a page: no account in IndexedDB -> the registration form (requestCode, verify);
// with an account -> log in with the device key and an Inbox, keep the connection up
// (reconnect with back-off), and render from IndexedDB. The server's word is final on
// "kicked": "logged in elsewhere" waits for the person to take the session back,
// "replaced by a new device" (or a key the server no longer knows) signs this browser out.
import { ConnectionClosed, RpcConnection } from "./rpc";
import { type Account, type Chat, type StoredMessage, Store, type Tick } from "./store";
import {
  Inbox,
  type Inbox_Deliver$Params,
  type Inbox_Kicked$Params,
  type Inbox_Presence$Params,
  type Inbox_Receipt$Params,
  PresenceState,
  ReceiptKind,
  type Session$Client,
} from "./gen/client";

// ------------------------------------------------------------------------------ DOM helpers

type Child = Node | string | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, string | boolean | ((e: Event) => void)> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (typeof value === "boolean") {
      if (value) el.setAttribute(name, "");
    } else el.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id}`);
  return el;
}

function input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}

function clock(ms: number): string {
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

function initials(title: string): string {
  const digits = title.replace(/[^0-9A-Za-z ]/g, "").trim();
  if (/^[0-9]+$/.test(digits)) return digits.slice(-2);
  return digits
    .split(/\s+/)
    .map((w) => w[0] ?? "")
    .join("")
    .slice(0, 2)
    .toUpperCase();
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  // capnp-es prefixes server exceptions; the host's sentence is what a person should read.
  return text.replace(/^.*?remote exception: /i, "").replace(/^Error: /, "");
}

// ------------------------------------------------------------------------------ state

interface Contact {
  phone: string;
  registered: boolean;
  state: "online" | "away" | "offline";
  lastSeen: number;
}

interface Group {
  id: string;
  name: string;
  owner: string;
  members: string[];
}

type ConnState = "connecting" | "online" | "offline" | "kicked";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

let store: Store;
let account: Account | undefined;
let rpc: RpcConnection | null = null;
let session: Session$Client | null = null;
let connState: ConnState = "offline";
let kickedFor: string | null = null;
let attempts = 0;
let reconnectTimer: number | undefined;
let openChat: string | null = null;
let sidebarTab: "chats" | "contacts" = "chats";
const contacts = new Map<string, Contact>();
const groups = new Map<string, Group>();
const typingFrom = new Map<string, number>(); // phone -> when the "typing" expires
let lastTypingSent = 0;
let typingStopTimer: number | undefined;

function chatTitle(chat: string): string {
  if (chat.startsWith("g:")) return groups.get(chat.slice(2))?.name ?? `Group ${chat.slice(2)}`;
  return chat.slice(2);
}

// ------------------------------------------------------------------------------ connection

function wsUrl(): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rpc`;
}

function setConn(state: ConnState, detail = ""): void {
  connState = state;
  const el = document.getElementById("conn-state");
  if (!el) return;
  el.dataset.state = state;
  const text: Record<ConnState, string> = {
    connecting: "Connecting…",
    online: "Online",
    offline: "Offline",
    kicked: "Signed out here",
  };
  el.textContent = detail ? `${text[state]} · ${detail}` : text[state];
}

function scheduleReconnect(): void {
  if (kickedFor !== null || !account) return;
  const delay = Math.min(30_000, 500 * 2 ** Math.min(attempts, 6)) * (0.75 + Math.random() / 2);
  attempts += 1;
  const retryAt = Date.now() + delay;
  const tick = () => {
    if (connState !== "offline") return;
    const left = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    setConn("offline", `retrying in ${left} s`);
  };
  setConn("offline");
  tick();
  const countdown = window.setInterval(tick, 1000);
  window.clearTimeout(reconnectTimer);
  reconnectTimer = window.setTimeout(() => {
    window.clearInterval(countdown);
    void connect();
  }, delay);
}

const inboxTarget = {
  deliver: async (params: Inbox_Deliver$Params): Promise<void> => {
    const incoming: StoredMessage[] = [];
    for (const m of params.messages) {
      const group = m.group.toString();
      let body = "";
      try {
        body = decoder.decode(m.body.toUint8Array());
      } catch {
        body = "";
      }
      incoming.push({
        uid: `in ${m.from} ${m.clientMsgId}`,
        chat: group === "0" ? `p:${m.from}` : `g:${group}`,
        dir: "in",
        from: m.from,
        to: account?.phone ?? "",
        group,
        clientMsgId: m.clientMsgId,
        sid: m.id.toString(),
        body,
        ts: Number(m.timestamp),
        tick: "sent",
        readSent: false,
      });
    }
    // Stored (committed) before this returns: returning tells the server we have them.
    const fresh = await store.putIncoming(
      incoming,
      (m) => chatTitle(m.chat),
      (chat) => chat === openChat && document.visibilityState === "visible",
    );
    if (fresh.some((m) => m.group !== "0" && !groups.has(m.group))) void refreshGroups();
    for (const m of fresh) typingFrom.delete(m.from);
    await renderChats();
    if (openChat && fresh.some((m) => m.chat === openChat)) {
      await renderConversation();
      void sendReadReceipts();
    }
  },
  receipt: async (params: Inbox_Receipt$Params): Promise<void> => {
    const receipts = [...params.receipts].map((r) => ({
      sid: r.id.toString(),
      tick: (r.kind === ReceiptKind.READ ? "read" : "delivered") as Tick,
    }));
    const changed = await store.applyReceipts(receipts);
    for (const m of changed) updateTick(m);
  },
  presence: async (params: Inbox_Presence$Params): Promise<void> => {
    for (const u of params.updates) {
      const c = contacts.get(u.phone) ?? {
        phone: u.phone,
        registered: true,
        state: "offline" as const,
        lastSeen: 0,
      };
      c.state =
        u.state === PresenceState.ONLINE ? "online" : u.state === PresenceState.AWAY ? "away" : "offline";
      if (Number(u.lastSeen) > 0) c.lastSeen = Number(u.lastSeen);
      contacts.set(u.phone, c);
      if (u.typing) typingFrom.set(u.phone, Date.now() + 8000);
      else typingFrom.delete(u.phone);
    }
    renderPresence();
    if (sidebarTab === "contacts") renderContacts();
  },
  kicked: async (params: Inbox_Kicked$Params): Promise<void> => {
    showKicked(params.reason);
  },
};

async function connect(): Promise<void> {
  if (!account || kickedFor !== null || rpc) return;
  window.clearTimeout(reconnectTimer);
  setConn("connecting");
  let connection: RpcConnection;
  try {
    connection = await RpcConnection.open(wsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  rpc = connection;
  void connection.closed.then((why) => {
    if (rpc !== connection) return;
    rpc = null;
    session = null;
    if (kickedFor !== null) {
      setConn("kicked");
    } else {
      console.info(`connection lost: ${why.message}`);
      scheduleReconnect();
    }
  });
  const me = account;
  try {
    const inbox = new Inbox.Server(inboxTarget).client();
    const result = await connection.call(() =>
      connection.gateway
        .login((p) => {
          p.phone = me.phone;
          p._initKey(me.key.length).copyBuffer(me.key);
          p.inbox = inbox;
        })
        .promise(),
    );
    session = result.session;
  } catch (error) {
    if (error instanceof ConnectionClosed) return; // the close handler reconnects
    const text = errorText(error);
    if (/invalid device key/.test(text)) {
      showKicked("replaced by a new device");
    } else {
      setConn("offline", text);
    }
    connection.close();
    return;
  }
  attempts = 0;
  setConn("online");
  await Promise.all([refreshContacts(), refreshGroups()]).catch(() => undefined);
  await resendPending();
  void sendReadReceipts();
}

// Calls the session, or fails with "not connected" at once.
function withSession<T>(use: (s: Session$Client) => Promise<T>): Promise<T> {
  const connection = rpc;
  const s = session;
  if (!connection || !s) return Promise.reject(new ConnectionClosed("not connected"));
  return connection.call(() => use(s));
}

function showKicked(reason: string): void {
  kickedFor = reason;
  window.clearTimeout(reconnectTimer);
  setConn("kicked");
  const replaced = /replaced by a new device/.test(reason);
  const banner = $("kicked-banner");
  banner.hidden = false;
  banner.dataset.reason = reason;
  banner.replaceChildren(
    h(
      "div",
      { class: "kicked-text" },
      h(
        "strong",
        {},
        replaced ? "Replaced by a new device" : reason === "logged in elsewhere" ? "Logged in elsewhere" : "Disconnected",
      ),
      h(
        "span",
        {},
        replaced
          ? `${account?.phone ?? "This phone"} was registered on another device. This browser is signed out; its history stays here.`
          : reason === "logged in elsewhere"
            ? `${account?.phone ?? "This phone"} is open in another window or device. Messages now go there.`
            : `The server closed this session: ${reason}.`,
      ),
    ),
    replaced
      ? h("button", { id: "register-again", onclick: () => void signOut() }, "Register this browser again")
      : h("button", { id: "use-here", onclick: () => useHere() }, "Use here"),
  );
  rpc?.close();
}

function useHere(): void {
  kickedFor = null;
  $("kicked-banner").hidden = true;
  attempts = 0;
  void connect();
}

async function signOut(): Promise<void> {
  kickedFor = null;
  rpc?.close();
  rpc = null;
  session = null;
  const phone = account?.phone ?? "";
  account = undefined;
  await store.setAccount(undefined);
  showRegister(phone);
}

// ------------------------------------------------------------------------------ actions

async function refreshContacts(): Promise<void> {
  const result = await withSession((s) => s.contacts().promise());
  contacts.clear();
  for (const c of result.contacts) {
    contacts.set(c.phone, {
      phone: c.phone,
      registered: c.registered,
      state:
        c.state === PresenceState.ONLINE ? "online" : c.state === PresenceState.AWAY ? "away" : "offline",
      lastSeen: Number(c.lastSeen),
    });
  }
  renderContacts();
  renderPresence();
}

async function refreshGroups(): Promise<void> {
  const result = await withSession((s) => s.groups().promise());
  groups.clear();
  for (const g of result.groups) {
    const id = g.id.toString();
    groups.set(id, { id, name: g.name, owner: g.owner, members: [...g.members] });
    await store.ensureChat(`g:${id}`, g.name);
  }
  await renderChats();
  renderPresence();
}

async function addContact(phone: string): Promise<void> {
  await withSession((s) =>
    s
      .addContacts((p) => {
        const list = p._initPhones(1);
        list.set(0, phone);
      })
      .promise(),
  );
  await refreshContacts();
  await store.ensureChat(`p:${phone}`, phone);
  await renderChats();
}

async function createGroup(name: string, members: string[]): Promise<string> {
  const result = await withSession((s) =>
    s
      .createGroup((p) => {
        p.name = name;
        const list = p._initMembers(members.length);
        members.forEach((m, i) => list.set(i, m));
      })
      .promise(),
  );
  const id = result.group.toString();
  await refreshGroups();
  return id;
}

async function addMembers(group: string, members: string[]): Promise<void> {
  await withSession((s) =>
    s
      .addMembers((p) => {
        p.group = BigInt(group);
        const list = p._initMembers(members.length);
        members.forEach((m, i) => list.set(i, m));
      })
      .promise(),
  );
  await refreshGroups();
}

async function sendText(chat: string, body: string): Promise<void> {
  if (!account) return;
  const clientMsgId = crypto.randomUUID();
  const m: StoredMessage = {
    uid: `out ${clientMsgId}`,
    chat,
    dir: "out",
    from: account.phone,
    to: chat.startsWith("p:") ? chat.slice(2) : "",
    group: chat.startsWith("g:") ? chat.slice(2) : "0",
    clientMsgId,
    sid: "",
    body,
    ts: Date.now(),
    tick: "pending",
    readSent: true,
  };
  // Kept first: a message typed while offline goes out on the next login.
  await store.putOutgoing(m, chatTitle(chat));
  await renderConversation();
  await renderChats();
  await transmit(m);
}

const inFlight = new Set<string>();

async function transmit(m: StoredMessage): Promise<void> {
  if (inFlight.has(m.uid)) return;
  inFlight.add(m.uid);
  try {
    const bytes = encoder.encode(m.body);
    const sent = await withSession((s) =>
      m.group === "0"
        ? s
            .send((p) => {
              p.to = m.to;
              p.clientMsgId = m.clientMsgId;
              p._initBody(bytes.length).copyBuffer(bytes);
            })
            .promise()
        : s
            .sendGroup((p) => {
              p.group = BigInt(m.group);
              p.clientMsgId = m.clientMsgId;
              p._initBody(bytes.length).copyBuffer(bytes);
            })
            .promise(),
    );
    // A send's reply may carry the "delivered" tick too (deliveredAt non-zero).
    const delivered = "deliveredAt" in sent && sent.deliveredAt !== 0n;
    const updated = await store.markSent(
      m.uid,
      sent.id.toString(),
      Number(sent.timestamp),
      delivered ? "delivered" : "sent",
    );
    if (updated) updateTick(updated);
  } catch (error) {
    // Not connected: stays pending and goes out after the next login (same clientMsgId, so
    // the server never delivers it twice). Refused by the server: say why.
    if (!(error instanceof ConnectionClosed)) toast(errorText(error));
  } finally {
    inFlight.delete(m.uid);
  }
}

async function resendPending(): Promise<void> {
  for (const m of await store.pendingSends()) await transmit(m);
}

async function sendReadReceipts(): Promise<void> {
  if (!openChat || !session || document.visibilityState !== "visible") return;
  const unread = await store.markChatRead(openChat);
  await renderChats();
  if (unread.length === 0) return;
  try {
    await withSession((s) =>
      s
        .receipt((p) => {
          const ids = p._initIds(unread.length);
          unread.forEach((m, i) => ids.set(i, BigInt(m.sid)));
          p.kind = ReceiptKind.READ;
        })
        .promise(),
    );
    await store.markReadSent(unread.map((m) => m.uid));
  } catch {
    // Sent again the next time the chat is looked at.
  }
}

function onComposerInput(): void {
  if (!openChat?.startsWith("p:") || !session) return;
  const to = openChat.slice(2);
  const now = Date.now();
  if (now - lastTypingSent > 3000) {
    lastTypingSent = now;
    sendTyping(to, true);
  }
  window.clearTimeout(typingStopTimer);
  typingStopTimer = window.setTimeout(() => stopTyping(to), 4000);
}

function stopTyping(to: string): void {
  window.clearTimeout(typingStopTimer);
  if (lastTypingSent === 0) return;
  lastTypingSent = 0;
  sendTyping(to, false);
}

// Typing is never queued by the server; a failure just means nobody sees it.
function sendTyping(to: string, active: boolean): void {
  void withSession((s) =>
    s
      .typing((p) => {
        p.to = to;
        p.active = active;
      })
      .promise(),
  ).catch(() => undefined);
}

// ------------------------------------------------------------------------------ rendering

function toast(text: string): void {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  window.setTimeout(() => {
    if (el.textContent === text) el.hidden = true;
  }, 5000);
}

function tickMark(tick: Tick): HTMLElement {
  const glyph: Record<Tick, string> = { pending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓" };
  const label: Record<Tick, string> = {
    pending: "waiting to send",
    sent: "sent",
    delivered: "delivered",
    read: "read",
  };
  return h("span", { class: `tick tick-${tick}`, title: label[tick], "aria-label": label[tick] }, glyph[tick]);
}

function updateTick(m: StoredMessage): void {
  const el = document.querySelector<HTMLElement>(`.msg[data-uid="${CSS.escape(m.uid)}"]`);
  if (!el) return;
  el.dataset.tick = m.tick;
  el.querySelector(".tick")?.replaceWith(tickMark(m.tick));
}

async function renderChats(): Promise<void> {
  const list = document.getElementById("chat-list");
  if (!list) return;
  const chats: Chat[] = await store.chats();
  list.replaceChildren(
    ...chats.map((c) => {
      const title = chatTitle(c.chat) || c.title;
      const typing = c.chat.startsWith("p:") && isTyping(c.chat.slice(2));
      return h(
        "li",
        {
          class: `chat-item${c.chat === openChat ? " active" : ""}`,
          "data-chat": c.chat,
          onclick: () => void openConversation(c.chat),
        },
        h("div", { class: `avatar${c.chat.startsWith("g:") ? " group" : ""}` }, initials(title)),
        h(
          "div",
          { class: "chat-main" },
          h(
            "div",
            { class: "chat-top" },
            h("span", { class: "chat-title" }, title),
            h("span", { class: "chat-time" }, c.lastTs && c.lastBody ? clock(c.lastTs) : ""),
          ),
          h(
            "div",
            { class: "chat-bottom" },
            typing
              ? h("span", { class: "chat-last typing" }, "typing…")
              : h("span", { class: "chat-last" }, c.lastDir === "out" ? `You: ${c.lastBody}` : c.lastBody),
            c.unread > 0 ? h("span", { class: "unread" }, String(c.unread)) : null,
          ),
        ),
      );
    }),
  );
  if (chats.length === 0) {
    list.append(h("li", { class: "empty" }, "No chats yet. Add a contact to start one."));
  }
}

function isTyping(phone: string): boolean {
  const until = typingFrom.get(phone);
  return until !== undefined && until > Date.now();
}

function presenceText(chat: string): string {
  if (chat.startsWith("g:")) {
    const g = groups.get(chat.slice(2));
    const typers = g?.members.filter((m) => isTyping(m)) ?? [];
    if (typers.length) return `${typers.join(", ")} typing…`;
    return g ? `${g.members.length} members: ${g.members.join(", ")}` : "";
  }
  const phone = chat.slice(2);
  if (isTyping(phone)) return "typing…";
  const c = contacts.get(phone);
  if (!c) return "not in your contacts: add them to see when they are online";
  if (!c.registered) return "not on Switchboard yet";
  if (c.state === "online") return "online";
  if (c.state === "away") return "away";
  return c.lastSeen > 0 ? `last seen ${clock(c.lastSeen)}` : "offline";
}

function renderPresence(): void {
  if (openChat) {
    const el = document.getElementById("peer-status");
    if (el) {
      el.textContent = presenceText(openChat);
      el.dataset.typing = String(openChat.startsWith("p:") && isTyping(openChat.slice(2)));
    }
  }
  void renderChats();
}

function renderContacts(): void {
  const list = document.getElementById("contact-list");
  if (!list) return;
  const all = [...contacts.values()].sort((a, b) => a.phone.localeCompare(b.phone));
  list.replaceChildren(
    ...all.map((c) =>
      h(
        "li",
        {
          class: "chat-item",
          "data-contact": c.phone,
          onclick: () => void openConversation(`p:${c.phone}`),
        },
        h("div", { class: "avatar" }, initials(c.phone)),
        h(
          "div",
          { class: "chat-main" },
          h("div", { class: "chat-top" }, h("span", { class: "chat-title" }, c.phone)),
          h(
            "div",
            { class: "chat-bottom" },
            h(
              "span",
              { class: `chat-last presence-${c.state}` },
              !c.registered
                ? "not on Switchboard yet"
                : c.state === "online"
                  ? "online"
                  : c.state === "away"
                    ? "away"
                    : c.lastSeen > 0
                      ? `last seen ${clock(c.lastSeen)}`
                      : "offline",
            ),
          ),
        ),
      ),
    ),
  );
  if (all.length === 0) list.append(h("li", { class: "empty" }, "No contacts yet."));
}

function messageView(m: StoredMessage, showSender: boolean): HTMLElement {
  return h(
    "div",
    { class: `msg ${m.dir}`, "data-uid": m.uid, "data-tick": m.tick, "data-sid": m.sid },
    showSender && m.dir === "in" ? h("div", { class: "sender" }, m.from) : null,
    h("span", { class: "body" }, m.body),
    h(
      "span",
      { class: "meta" },
      h("span", { class: "time" }, clock(m.ts)),
      m.dir === "out" ? tickMark(m.tick) : null,
    ),
  );
}

async function renderConversation(): Promise<void> {
  const pane = $("conversation");
  if (!openChat) {
    pane.replaceChildren(
      h(
        "div",
        { class: "placeholder" },
        h("div", { class: "placeholder-logo" }, "☎"),
        h("h2", {}, "Switchboard Web"),
        h("p", {}, "Pick a chat, or add a contact to start one. Messages are kept in this browser."),
      ),
    );
    return;
  }
  const chat = openChat;
  const messages = await store.messages(chat);
  if (chat !== openChat) return;
  let list = document.getElementById("messages");
  if (!list || pane.dataset.chat !== chat) {
    pane.dataset.chat = chat;
    const isGroup = chat.startsWith("g:");
    const composer = h("input", {
      id: "composer",
      type: "text",
      placeholder: "Type a message",
      autocomplete: "off",
      oninput: () => onComposerInput(),
    });
    const form = h(
      "form",
      {
        id: "composer-form",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const text = composer.value.trim();
          if (!text) return;
          composer.value = "";
          if (chat.startsWith("p:")) stopTyping(chat.slice(2));
          void sendText(chat, text);
        },
      },
      composer,
      h("button", { id: "send", type: "submit", title: "Send" }, "➤"),
    );
    pane.replaceChildren(
      h(
        "header",
        { class: "conv-header" },
        h("div", { class: `avatar${isGroup ? " group" : ""}` }, initials(chatTitle(chat))),
        h(
          "div",
          { class: "conv-title" },
          h("div", { id: "peer-name" }, chatTitle(chat)),
          h("div", { id: "peer-status" }, presenceText(chat)),
        ),
        isGroup
          ? h("button", { id: "add-member", class: "ghost", onclick: () => openAddMember(chat.slice(2)) }, "Add member")
          : null,
      ),
      h("div", { id: "messages" }),
      form,
    );
    list = $("messages");
    composer.focus();
  }
  const isGroup = chat.startsWith("g:");
  list.replaceChildren(...messages.map((m) => messageView(m, isGroup)));
  if (messages.length === 0) list.append(h("div", { class: "empty" }, "No messages yet. Say hi!"));
  list.scrollTop = list.scrollHeight;
  renderPresence();
}

async function openConversation(chat: string): Promise<void> {
  openChat = chat;
  await store.ensureChat(chat, chatTitle(chat));
  if (chat.startsWith("p:") && session) void refreshContacts().catch(() => undefined);
  showTab("chats");
  await renderConversation();
  await renderChats();
  void sendReadReceipts();
}

function showTab(tab: "chats" | "contacts"): void {
  sidebarTab = tab;
  $("chat-list").hidden = tab !== "chats";
  $("contacts-pane").hidden = tab !== "contacts";
  $("tab-chats").classList.toggle("active", tab === "chats");
  $("tab-contacts").classList.toggle("active", tab === "contacts");
  if (tab === "contacts") {
    renderContacts();
    // Presence becomes visible when the other side adds us too; the server does not push
    // that moment, so the list is asked for again whenever it is looked at.
    if (session) void refreshContacts().catch(() => undefined);
  }
}

function openDialog(title: string, body: HTMLElement, submit: () => Promise<void>): void {
  const error = h("div", { class: "dialog-error" });
  const dialog = h(
    "form",
    {
      class: "dialog",
      onsubmit: (e: Event) => {
        e.preventDefault();
        error.textContent = "";
        submit()
          .then(() => overlay.remove())
          .catch((err) => (error.textContent = errorText(err)));
      },
    },
    h("h3", {}, title),
    body,
    error,
    h(
      "div",
      { class: "dialog-buttons" },
      h("button", { type: "button", class: "ghost", onclick: () => overlay.remove() }, "Cancel"),
      h("button", { type: "submit", id: "dialog-ok" }, "OK"),
    ),
  );
  const overlay = h("div", { class: "overlay" }, dialog);
  document.body.append(overlay);
  dialog.querySelector("input")?.focus();
}

function phonesOf(text: string): string[] {
  return text
    .split(/[\s,;]+/)
    .map((p) => p.trim())
    .filter((p) => p !== "");
}

function openNewGroup(): void {
  const name = h("input", { id: "group-name", placeholder: "Group name", required: true });
  const picks = [...contacts.values()].map((c) =>
    h("label", { class: "pick" }, h("input", { type: "checkbox", value: c.phone }), c.phone),
  );
  const extra = h("input", { id: "group-members", placeholder: "More members: +15550001, +15550002" });
  openDialog("New group", h("div", { class: "dialog-body" }, name, ...picks, extra), async () => {
    const members = [
      ...picks.map((p) => p.querySelector("input")!).filter((i) => i.checked).map((i) => i.value),
      ...phonesOf(extra.value),
    ];
    const id = await createGroup(name.value.trim(), members);
    await openConversation(`g:${id}`);
  });
}

function openAddMember(group: string): void {
  const phones = h("input", { id: "member-phones", placeholder: "+15550003", required: true });
  openDialog("Add members", h("div", { class: "dialog-body" }, phones), async () => {
    await addMembers(group, phonesOf(phones.value));
    await renderConversation();
  });
}

// ------------------------------------------------------------------------------ screens

function showRegister(phone = ""): void {
  $("app").hidden = true;
  const screen = $("register");
  screen.hidden = false;
  const status = h("p", { id: "register-status", class: "status" });
  const phoneInput = h("input", {
    id: "phone",
    type: "tel",
    placeholder: "+15550001234",
    value: phone,
    autocomplete: "tel",
    required: true,
  });
  const codeInput = h("input", {
    id: "code",
    inputmode: "numeric",
    placeholder: "5-digit code",
    maxlength: "5",
    autocomplete: "one-time-code",
  });
  const nameInput = h("input", { id: "device-name", value: "Browser", placeholder: "Device name" });
  const codeStep = h(
    "div",
    { id: "code-step", hidden: true },
    h("label", {}, "Code from the SMS", codeInput),
    h("label", {}, "Name this device", nameInput),
    h("button", { id: "verify", type: "button", onclick: () => void verify() }, "Verify and sign in"),
    h(
      "p",
      { class: "hint" },
      "On a development host the SMS goes to the host's log and outbox: ",
      h("code", {}, "sbctl outbox +PHONE"),
      ".",
    ),
  );
  let gateway: RpcConnection | null = null;
  const gatewayConnection = async (): Promise<RpcConnection> => {
    if (!gateway) {
      gateway = await RpcConnection.open(wsUrl());
      const mine = gateway;
      void mine.closed.then(() => {
        if (gateway === mine) gateway = null;
      });
    }
    return gateway;
  };
  const requestCode = async () => {
    status.textContent = "Sending a code…";
    try {
      const c = await gatewayConnection();
      const result = await c.call(() =>
        c.gateway.requestCode((p) => (p.phone = phoneInput.value.trim())).promise(),
      );
      status.textContent = `Code sent to ${phoneInput.value.trim()}; it expires in ${Math.round(result.expiresInSeconds / 60)} min.`;
      codeStep.hidden = false;
      codeInput.focus();
    } catch (error) {
      status.textContent = errorText(error);
    }
  };
  const verify = async () => {
    status.textContent = "Checking…";
    try {
      const c = await gatewayConnection();
      const phoneNumber = phoneInput.value.trim();
      const result = await c.call(() =>
        c.gateway
          .verify((p) => {
            p.phone = phoneNumber;
            p.code = codeInput.value.trim();
            p.deviceName = nameInput.value.trim() || "Browser";
          })
          .promise(),
      );
      const key = new Uint8Array(result.key.toUint8Array());
      account = { phone: phoneNumber, key, deviceName: nameInput.value.trim() || "Browser" };
      await store.setAccount(account);
      c.close();
      gateway = null;
      await showApp();
    } catch (error) {
      status.textContent = errorText(error);
    }
  };
  screen.replaceChildren(
    h(
      "div",
      { class: "register-card" },
      h("div", { class: "placeholder-logo" }, "☎"),
      h("h1", {}, "Switchboard Web"),
      h("p", {}, "Sign in with your phone number. We'll send a code by SMS."),
      h(
        "form",
        {
          id: "register-form",
          onsubmit: (e: Event) => {
            e.preventDefault();
            void requestCode();
          },
        },
        h("label", {}, "Phone number", phoneInput),
        h("button", { id: "request-code", type: "submit" }, "Send code"),
      ),
      codeStep,
      status,
    ),
  );
  phoneInput.focus();
}

async function showApp(): Promise<void> {
  $("register").hidden = true;
  $("app").hidden = false;
  $("me").textContent = account?.phone ?? "";
  $("kicked-banner").hidden = true;
  kickedFor = null;
  openChat = null;
  await renderConversation();
  await renderChats();
  void connect();
}

function wireSidebar(): void {
  $("tab-chats").addEventListener("click", () => showTab("chats"));
  $("tab-contacts").addEventListener("click", () => showTab("contacts"));
  $("new-group").addEventListener("click", () => openNewGroup());
  $("add-contact-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const field = input("contact-phone");
    const phone = field.value.trim();
    if (!phone) return;
    addContact(phone)
      .then(() => {
        field.value = "";
      })
      .catch((error) => toast(errorText(error)));
  });
  document.addEventListener("visibilitychange", () => void sendReadReceipts());
  // Typing indicators expire by themselves if the "stopped" update never comes.
  window.setInterval(() => {
    let changed = false;
    for (const [phone, until] of typingFrom) {
      if (until <= Date.now()) {
        typingFrom.delete(phone);
        changed = true;
      }
    }
    if (changed) renderPresence();
  }, 1000);
  // Who became a mutual contact meanwhile (see showTab).
  window.setInterval(() => {
    if (session) void refreshContacts().catch(() => undefined);
  }, 30_000);
}

async function main(): Promise<void> {
  store = await Store.open();
  wireSidebar();
  account = await store.account();
  if (account) await showApp();
  else showRegister();
}

void main();
