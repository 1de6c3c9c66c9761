// Switchboard Web in a real browser: headless Debian Chromium, driven by puppeteer-core,
// against the real host binary (its web endpoint, the web app it serves, the dev SMS sink read
// with `sbctl outbox`). Three isolated browser profiles (browser contexts: each has its own
// IndexedDB and storage):
//   A and B register, add each other, chat (typing, ticks up to read, unread counts), make a
//   group; a reload resumes the session and the history; messages sent while B's tab is
//   closed appear when B opens the app again; a second tab of A takes over the session
//   ("logged in elsewhere"); C verifying A's phone replaces A's device ("replaced by a new
//   device").
// Every wait is on a condition (waitForSelector/waitForFunction); screenshots go to
// $WEB_TEST_OUTPUT (default <build>/tests/web/output).
//
// Environment: SWITCHBOARD_BUILD (default <repo>/build), CHROMIUM (default /usr/bin/chromium).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const build = resolve(process.env.SWITCHBOARD_BUILD ?? join(repo, "build"));
const output = resolve(process.env.WEB_TEST_OUTPUT ?? join(build, "tests", "web", "output"));
const chromium = process.env.CHROMIUM ?? "/usr/bin/chromium";
// puppeteer-core is a dev dependency of the web app (web/package-lock.json).
const puppeteer = createRequire(join(repo, "web", "package.json"))("puppeteer-core");
const run = promisify(execFile);

const WAIT = { timeout: 60_000 };
const A = "+15550100001";
const B = "+15550100002";

let work;
let host;
let hostLog;
let baseUrl;
let adminSocket;
let browser;
const pageErrors = [];

// Polls `probe` (async, returns a value or undefined) until it yields a value.
async function waitFor(what, probe, guardMs = 60_000) {
  const deadline = Date.now() + guardMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}\n${hostTail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function hostTail() {
  try {
    return readFileSync(hostLog, "utf8").split("\n").slice(-30).join("\n");
  } catch {
    return "";
  }
}

// The newest code the host's dev SMS sink sent to `phone` after `since` (ms).
async function smsCode(phone, since) {
  return waitFor(`an SMS code for ${phone}`, async () => {
    const { stdout } = await run(join(build, "ctl", "sbctl"), [
      "--socket",
      adminSocket,
      "outbox",
      phone,
      "--json",
    ]);
    const entries = JSON.parse(stdout);
    const fresh = entries.filter((e) => e.atMs >= since && /^[0-9]{5}$/.test(e.code));
    return fresh.length > 0 ? fresh[0].code : undefined;
  });
}

async function shot(page, name) {
  await page.screenshot({ path: join(output, `${name}.png`) });
}

async function newPage(context) {
  const page = await context.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  page.on("pageerror", (error) => pageErrors.push(`${error.message}`));
  return page;
}

async function register(page, phone) {
  await page.goto(baseUrl, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#phone", { visible: true, ...WAIT });
  await page.type("#phone", phone);
  const since = Date.now() - 1000;
  await page.click("#request-code");
  await page.waitForSelector("#code-step", { visible: true, ...WAIT });
  const code = await smsCode(phone, since);
  await page.type("#code", code);
  await page.click("#verify");
  await online(page);
}

function online(page) {
  return page.waitForSelector('#conn-state[data-state="online"]', WAIT);
}

async function addContact(page, phone) {
  await page.click("#tab-contacts");
  await page.type("#contact-phone", phone);
  await page.click("#add-contact");
  await page.waitForSelector(`[data-contact="${phone}"]`, WAIT);
}

async function openChat(page, chat) {
  await page.click("#tab-chats");
  const item = `.chat-item[data-chat="${chat}"]`;
  await page.waitForSelector(item, WAIT);
  // Found and clicked in one step inside the page: the list is rebuilt as messages and ticks
  // arrive, and a handle taken before a rebuild points at a node no longer in the document.
  await page.$eval(item, (element) => element.click());
  await page.waitForSelector(`#conversation[data-chat="${chat}"] #composer`, WAIT);
}

async function send(page, text) {
  await page.type("#composer", text);
  await page.click("#send");
}

// The outgoing bubble with `text` reaches `tick` (pending, sent, delivered, read) or a
// later one: to an online phone "sent" and "delivered" come microseconds apart.
function tickOf(page, text, tick) {
  return page.waitForFunction(
    (body, want) => {
      const rank = { pending: 0, sent: 1, delivered: 2, read: 3 };
      return [...document.querySelectorAll(".msg.out")].some(
        (m) => m.querySelector(".body")?.textContent === body && rank[m.dataset.tick] >= rank[want],
      );
    },
    WAIT,
    text,
    tick,
  );
}

function received(page, text) {
  return page.waitForFunction(
    (body) =>
      [...document.querySelectorAll(".msg.in .body")].some((b) => b.textContent === body),
    WAIT,
    text,
  );
}

function countIn(page, text) {
  return page.evaluate(
    (body) =>
      [...document.querySelectorAll(".msg .body")].filter((b) => b.textContent === body).length,
    text,
  );
}

before(async () => {
  mkdirSync(output, { recursive: true });
  work = mkdtempSync(join(tmpdir(), "sbweb-"));
  adminSocket = join(work, "admin.sock");
  hostLog = join(work, "host.log");
  const log = openSync(hostLog, "w");
  host = spawn(
    join(build, "host", "switchboard"),
    [
      // Port 0 for both (a port picked in advance could be taken before the host binds it);
      // the log says which port the web endpoint got.
      "--listen",
      "127.0.0.1:0",
      "--web-listen",
      "127.0.0.1:0",
      "--web-root",
      join(build, "web", "public"),
      "--data-dir",
      join(work, "data"),
      "--plugin-dir",
      join(build, "plugins"),
      "--admin-socket",
      adminSocket,
      "--metrics-listen",
      "",
      "--threads",
      "2",
    ],
    { stdio: ["ignore", log, log] },
  );
  baseUrl = await waitFor("the web endpoint's port in the host log", async () => {
    const match = /web app on (http:\/\/127\.0\.0\.1:[0-9]+\/)/.exec(readFileSync(hostLog, "utf8"));
    return match ? match[1] : undefined;
  });
  await waitFor("the web endpoint", async () => {
    const response = await fetch(baseUrl);
    return response.ok ? true : undefined;
  });
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: [
      "--no-sandbox", // as root
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
      "--disable-gpu",
      "--disable-dev-shm-usage",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (host && host.exitCode === null) {
    const exited = new Promise((r) => host.once("exit", r));
    host.kill("SIGTERM");
    await exited;
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test("the host serves the app at / and refuses plain HTTP on /rpc", async () => {
  const page = await fetch(baseUrl);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>Switchboard Web<\/title>/);
  const script = await fetch(new URL("app.js", baseUrl));
  assert.equal(script.status, 200);
  assert.match(script.headers.get("content-type"), /^text\/javascript/);
  const rpc = await fetch(new URL("rpc", baseUrl));
  assert.equal(rpc.status, 400);
  assert.equal(await rpc.text(), "/rpc speaks Cap'n Proto RPC over WebSocket only\n");
  const missing = await fetch(new URL("no-such-file.js", baseUrl));
  assert.equal(missing.status, 404);
});

test("two people register, chat, see typing and ticks, make a group; reload, offline, kicks", async () => {
  const contextA = await browser.createBrowserContext();
  const contextB = await browser.createBrowserContext();
  const contextC = await browser.createBrowserContext();
  let a = await newPage(contextA);
  let b = await newPage(contextB);

  await register(a, A);
  await shot(a, "01-a-registered");
  await register(b, B);
  await addContact(a, B);
  await addContact(b, A);
  // Mutual contacts see each other online (the list is read again when it is shown).
  await a.click("#tab-chats");
  await a.click("#tab-contacts");
  await a.waitForFunction(
    (phone) => document.querySelector(`[data-contact="${phone}"] .presence-online`) !== null,
    WAIT,
    B,
  );

  // B looks at the chat with A while A types: B sees "typing…".
  await openChat(b, `p:${A}`);
  await openChat(a, `p:${B}`);
  await a.type("#composer", "Hello B");
  await b.waitForSelector('#peer-status[data-typing="true"]', WAIT);
  assert.equal(await b.$eval("#peer-status", (el) => el.textContent), "typing…");
  await shot(b, "02-b-sees-typing");
  await a.click("#send");

  // B has the chat open, so the message is delivered and read: A's ticks go to read.
  await received(b, "Hello B");
  await tickOf(a, "Hello B", "read");
  await send(b, "Hi A! Nice to see you on the web.");
  await received(a, "Hi A! Nice to see you on the web.");
  await tickOf(b, "Hi A! Nice to see you on the web.", "read");
  await send(a, "Typing, ticks and presence all work here.");
  await tickOf(a, "Typing, ticks and presence all work here.", "read");
  await shot(a, "03-a-conversation");

  // A reload resumes the session and the history, from IndexedDB, without registering again.
  await b.reload({ waitUntil: "domcontentloaded" });
  await online(b);
  await b.waitForSelector(`.chat-item[data-chat="p:${A}"]`, WAIT);
  // Not open after the reload: a new message counts as unread, with the last message shown.
  await send(a, "Unread until you open me");
  await tickOf(a, "Unread until you open me", "delivered");
  await b.waitForFunction(
    (chat) => {
      const item = document.querySelector(`.chat-item[data-chat="${chat}"]`);
      return (
        item?.querySelector(".unread")?.textContent === "1" &&
        item.querySelector(".chat-last")?.textContent === "Unread until you open me"
      );
    },
    WAIT,
    `p:${A}`,
  );
  await shot(b, "04-b-unread-after-reload");
  await openChat(b, `p:${A}`);
  await received(b, "Hello B"); // the history survived the reload
  await received(b, "Unread until you open me");
  await tickOf(a, "Unread until you open me", "read");
  assert.equal(await b.$(`.chat-item[data-chat="p:${A}"] .unread`), null);

  // Messages sent while B's tab is closed appear when B opens the app again.
  await b.close();
  await a.waitForFunction(() => document.querySelector("#peer-status")?.textContent?.startsWith("last seen"), WAIT);
  await send(a, "Sent while your tab was closed");
  await tickOf(a, "Sent while your tab was closed", "sent");
  b = await newPage(contextB);
  await b.goto(baseUrl, { waitUntil: "domcontentloaded" });
  await online(b);
  await openChat(b, `p:${A}`);
  await received(b, "Sent while your tab was closed");
  await tickOf(a, "Sent while your tab was closed", "read");
  for (const text of ["Hello B", "Unread until you open me", "Sent while your tab was closed"]) {
    assert.equal(await countIn(b, text), 1, `"${text}" shown once`);
  }

  // A group: create with B, send; B gets the chat with the group's name.
  await a.click("#new-group");
  await a.waitForSelector("#group-name", WAIT);
  await a.type("#group-name", "Weekend plans");
  await a.click(`.pick input[value="${B}"]`);
  await a.click("#dialog-ok");
  await a.waitForFunction(() => document.querySelector("#conversation")?.dataset.chat?.startsWith("g:"), WAIT);
  const groupChat = await a.$eval("#conversation", (el) => el.dataset.chat);
  await send(a, "Group hello");
  await tickOf(a, "Group hello", "sent");
  await b.waitForFunction(
    (chat) =>
      document.querySelector(`.chat-item[data-chat="${chat}"] .chat-title`)?.textContent ===
      "Weekend plans",
    WAIT,
    groupChat,
  );
  await openChat(b, groupChat);
  await received(b, "Group hello");
  await send(b, "Count me in");
  await received(a, "Count me in");
  await shot(a, "05-a-group");

  // Back to the direct chat for the README picture.
  await openChat(a, `p:${B}`);
  await shot(a, "readme-web-app");

  // A second tab of A logs in with the same key: the first is "logged in elsewhere".
  const a2 = await newPage(contextA);
  await a2.goto(baseUrl, { waitUntil: "domcontentloaded" });
  await online(a2);
  await a.waitForSelector('#kicked-banner[data-reason="logged in elsewhere"]', { visible: true, ...WAIT });
  assert.match(await a.$eval("#kicked-banner", (el) => el.textContent), /Logged in elsewhere/);
  await a.waitForSelector('#conn-state[data-state="kicked"]', WAIT);
  await shot(a, "06-a-logged-in-elsewhere");
  await a2.close();

  // "Use here" takes the session back.
  await a.click("#use-here");
  await online(a);

  // A third profile verifies A's phone: A's device is replaced and this browser signed out.
  const c = await newPage(contextC);
  await register(c, A);
  await a.waitForSelector('#kicked-banner[data-reason="replaced by a new device"]', { visible: true, ...WAIT });
  assert.match(await a.$eval("#kicked-banner", (el) => el.textContent), /Replaced by a new device/);
  await shot(a, "07-a-replaced");
  // Its old key no longer logs in: a reload shows the same, and offers to register again.
  await a.reload({ waitUntil: "domcontentloaded" });
  await a.waitForSelector('#kicked-banner[data-reason="replaced by a new device"]', { visible: true, ...WAIT });
  await a.waitForSelector("#register-again", WAIT);

  assert.deepEqual(pageErrors, []);
});
