// The demo chat client of fleets_mailbox: plain JavaScript, no build step.
//
// It follows docs/http-api.md: the mailbox is the truth and pushes are
// advisory. Each conversation keeps a cursor (the highest seq below which
// every message or hole is known); a pushed message with a seq it has is
// dropped, one beyond cursor + 1 makes it sync from the cursor, and after
// every (re)connect it syncs every conversation it has loaded. Unread counts
// are the server's, from the conversation list; the open conversation is
// marked read while the page is visible.
(() => {
  "use strict";

  const ID_RE = /^[A-Za-z0-9_.@+-]{1,128}$/;
  const SYNC_PAGE = 200;
  const PING_EVERY_MS = 20000;
  const SILENCE_LIMIT_MS = 45000;
  const STORAGE_KEY = "fleets-mailbox-demo";

  const $ = (id) => document.getElementById(id);

  // -- state ------------------------------------------------------------------

  class Conversation {
    constructor(id) {
      this.id = id;
      this.summary = null; // the server's summary, or null before any message
      this.messages = new Map(); // seq -> message
      this.holes = new Set(); // burned seqs
      this.cursor = 0; // every seq <= cursor is known (message, hole or not ours)
      this.loaded = false; // synced at least once
      this.syncing = null; // the running sync, if any
      this.again = false; // sync again once the running one ends
      this.outbox = new Map(); // clientMsgId -> {body, state}
      this.touched = 0; // when opened locally, to sort new chats first
      this.marking = false;
      this.error = null;
    }
  }

  const state = {
    userId: null,
    token: null,
    conversations: new Map(),
    groups: new Map(),
    listVersion: 0,
    listRefresh: null,
    listAgain: false,
    openId: null,
    notifications: new Map(),
    lastNotificationId: 0,
    ws: null,
    wsAttempt: 0,
    reconnectTimer: null,
    heartbeat: null,
    lastFrameAt: 0,
    stats: { pushes: 0, duplicates: 0, gapSyncs: 0, syncs: 0, reconnects: 0 },
  };
  // For tests and the curious: window.fleetsChat.state.
  window.fleetsChat = { state };

  // -- HTTP -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
      this.code = this.body.error || "http_error";
    }
  }

  async function api(method, path, body, retried = false) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401 && !retried && state.userId && path !== "/api/login") {
      // The demo server signs tokens with a secret of its own run: log in again.
      await login(state.userId);
      return api(method, path, body, true);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  async function login(userId) {
    const data = await api("POST", "/api/login", { userId });
    state.userId = data.userId;
    state.token = data.token;
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ userId: data.userId, token: data.token }));
    return data;
  }

  // -- conversations ------------------------------------------------------------

  function directId(a, b) {
    return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
  }

  function conversation(id) {
    let conv = state.conversations.get(id);
    if (!conv) {
      conv = new Conversation(id);
      state.conversations.set(id, conv);
    }
    return conv;
  }

  function titleOf(id) {
    const [kind, ...rest] = id.split(":");
    if (kind === "d") return rest[0] === state.userId ? rest[1] : rest[0];
    if (kind === "g") {
      const group = state.groups.get(rest[0]);
      return group ? group.name : rest[0];
    }
    return `#${rest.join(":")}`;
  }

  function isGroup(id) {
    return id.startsWith("g:");
  }

  // Records messages and holes, then moves the cursor over what is contiguous.
  function remember(conv, messages, holes) {
    for (const message of messages) {
      if (!(message.seq > 0)) continue;
      const known = conv.messages.get(message.seq);
      if (known && !newer(message, known)) continue;
      conv.messages.set(message.seq, message);
      if (message.senderId === state.userId) conv.outbox.delete(message.clientMsgId);
    }
    for (const seq of holes || []) conv.holes.add(seq);
    advance(conv);
  }

  function newer(a, b) {
    return (a.deleted && !b.deleted) || (a.editedAt || 0) > (b.editedAt || 0);
  }

  function advance(conv) {
    while (conv.messages.has(conv.cursor + 1) || conv.holes.has(conv.cursor + 1)) {
      conv.cursor += 1;
    }
  }

  // Pulls every page after the cursor; one sync at a time per conversation.
  function sync(conv) {
    if (conv.syncing) {
      conv.again = true;
      return conv.syncing;
    }
    conv.syncing = (async () => {
      try {
        do {
          conv.again = false;
          let more = true;
          while (more) {
            state.stats.syncs += 1;
            const page = await api(
              "GET",
              `/api/sync?conversationId=${encodeURIComponent(conv.id)}` +
                `&fromSequence=${conv.cursor}&limit=${SYNC_PAGE}`,
            );
            remember(conv, page.messages, page.holes);
            // Seqs up to nextFromSequence are all delivered or not ours.
            conv.cursor = Math.max(conv.cursor, page.nextFromSequence);
            advance(conv);
            more = page.hasMore;
          }
        } while (conv.again);
        conv.loaded = true;
        conv.error = null;
      } catch (error) {
        conv.error = error;
        if (error instanceof ApiError && error.status < 500) conv.loaded = true;
        throw error;
      } finally {
        conv.syncing = null;
        if (conv.id === state.openId) renderChat();
        markReadSoon();
      }
    })();
    return conv.syncing;
  }

  function syncQuietly(conv) {
    sync(conv).catch((error) => {
      if (!(error instanceof ApiError)) return; // offline: the reconnect syncs again
      if (conv.id === state.openId) toast(error.message);
    });
  }

  // Pulls the conversation list changed since the last version seen.
  function refreshList() {
    if (state.listRefresh) {
      state.listAgain = true;
      return state.listRefresh;
    }
    state.listRefresh = (async () => {
      try {
        do {
          state.listAgain = false;
          let more = true;
          while (more) {
            const page = await api(
              "GET",
              `/api/conversations?since=${state.listVersion}&limit=${SYNC_PAGE}`,
            );
            for (const summary of page.conversations) {
              const conv = conversation(summary.conversationId);
              if (!conv.summary || summary.version >= conv.summary.version) {
                conv.summary = summary;
              }
            }
            state.listVersion = Math.max(state.listVersion, page.nextVersion);
            more = page.hasMore;
          }
        } while (state.listAgain);
      } finally {
        state.listRefresh = null;
        renderList();
        markReadSoon();
      }
    })();
    return state.listRefresh;
  }

  let listTimer = null;
  function refreshListSoon() {
    clearTimeout(listTimer);
    listTimer = setTimeout(() => refreshList().catch(() => {}), 120);
  }

  async function refreshGroups() {
    const data = await api("GET", "/api/groups");
    state.groups = new Map(data.groups.map((g) => [g.groupId, g]));
    for (const group of data.groups) conversation(group.conversationId);
    renderList();
    if (state.openId && isGroup(state.openId)) renderChatHeader();
  }

  async function refreshNotifications() {
    let more = true;
    while (more) {
      const data = await api(
        "GET",
        `/api/notifications?after=${state.lastNotificationId}&limit=${SYNC_PAGE}`,
      );
      for (const n of data.notifications) addNotification(n);
      more = data.notifications.length === SYNC_PAGE;
    }
    renderNotifications();
  }

  function addNotification(n) {
    state.notifications.set(n.notificationId, n);
    state.lastNotificationId = Math.max(state.lastNotificationId, n.notificationId);
  }

  // -- push -------------------------------------------------------------------

  function onPushedMessage(message) {
    state.stats.pushes += 1;
    const conv = conversation(message.conversationId);
    refreshListSoon();
    if (conv.messages.has(message.seq) || conv.holes.has(message.seq)) {
      state.stats.duplicates += 1;
      return;
    }
    if (!conv.loaded) {
      // Never opened here: it loads from the mailbox when opened.
      if (conv.id === state.openId) syncQuietly(conv);
      return;
    }
    if (message.seq <= conv.cursor) {
      // Below the cursor yet unknown: not in our mailbox (joined later).
      state.stats.duplicates += 1;
      return;
    }
    remember(conv, [message], []);
    if (message.seq > conv.cursor) {
      state.stats.gapSyncs += 1;
      syncQuietly(conv);
    }
    if (conv.id === state.openId) renderChat();
    markReadSoon();
  }

  function onRead(frame) {
    const conv = conversation(frame.conversationId);
    if (conv.summary && frame.readSeq >= conv.summary.readSeq) {
      conv.summary = { ...conv.summary, readSeq: frame.readSeq, unread: frame.unread };
      renderList();
    }
    refreshListSoon();
  }

  function onNotification(n) {
    addNotification(n);
    renderNotifications();
    if (n.kind === "group_invite") refreshGroups().catch(() => {});
  }

  function onFrame(frame) {
    state.lastFrameAt = Date.now();
    switch (frame.type) {
      case "hello":
        state.wsAttempt = 0;
        setStatus("online");
        catchUp();
        break;
      case "message":
        onPushedMessage(frame.message);
        break;
      case "read":
        onRead(frame);
        break;
      case "notification":
        onNotification(frame.notification);
        break;
      default:
        break; // pong and anything new
    }
  }

  // After every (re)connect: the list, groups, notifications, then every
  // loaded conversation from its cursor; whatever was missed is in the mailbox.
  async function catchUp() {
    try {
      await Promise.all([refreshList(), refreshGroups(), refreshNotifications()]);
    } catch (_) {
      // The next reconnect tries again.
    }
    for (const conv of state.conversations.values()) {
      if (conv.loaded || conv.id === state.openId) syncQuietly(conv);
    }
    retryOutbox();
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token || state.ws) return;
    setStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws?token=${encodeURIComponent(state.token)}`);
    state.ws = ws;
    ws.onmessage = (event) => {
      if (state.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      onFrame(frame);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      clearInterval(state.heartbeat);
      setStatus("offline");
      scheduleReconnect();
    };
    ws.onopen = () => {
      state.lastFrameAt = Date.now();
      clearInterval(state.heartbeat);
      state.heartbeat = setInterval(() => {
        if (Date.now() - state.lastFrameAt > SILENCE_LIMIT_MS) {
          ws.close(); // silent for too long: reconnect
        } else if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: "ping" }));
        }
      }, PING_EVERY_MS);
    };
  }

  function scheduleReconnect() {
    if (!state.token) return;
    clearTimeout(state.reconnectTimer);
    const base = Math.min(10000, 500 * 2 ** state.wsAttempt);
    const delay = base / 2 + Math.random() * (base / 2);
    state.wsAttempt += 1;
    state.reconnectTimer = setTimeout(async () => {
      state.stats.reconnects += 1;
      if (state.wsAttempt > 1 && state.userId) {
        // Maybe the server restarted with another secret: refresh the token.
        try {
          await login(state.userId);
        } catch (_) {
          // still unreachable
        }
      }
      connect();
    }, delay);
  }

  function disconnect() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.heartbeat);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
    setStatus("offline");
  }

  window.addEventListener("offline", () => {
    if (state.ws) state.ws.close(); // onclose schedules the reconnect
  });
  window.addEventListener("online", () => {
    if (state.token && !state.ws) {
      state.wsAttempt = 0;
      connect();
    }
  });

  // -- sending and reading -----------------------------------------------------

  function newClientMsgId() {
    const random = Math.random().toString(36).slice(2, 10);
    return `web-${Date.now().toString(36)}-${random}`;
  }

  async function send(conv, body) {
    const clientMsgId = newClientMsgId();
    conv.outbox.set(clientMsgId, { body, state: "sending" });
    renderChat();
    await deliver(conv, clientMsgId);
  }

  // Sends (or resends: the same clientMsgId is idempotent) one outbox entry.
  async function deliver(conv, clientMsgId) {
    const entry = conv.outbox.get(clientMsgId);
    if (!entry) return;
    entry.state = "sending";
    try {
      const data = await api("POST", "/api/messages", {
        conversationId: conv.id,
        body: entry.body,
        clientMsgId,
      });
      conv.outbox.delete(clientMsgId);
      if (!conv.loaded) {
        await sync(conv);
      } else {
        remember(conv, [data.message], []);
        if (data.message.seq > conv.cursor) syncQuietly(conv);
      }
      refreshListSoon();
    } catch (error) {
      entry.state = error instanceof ApiError ? "failed" : "waiting";
      entry.error = error.message;
      if (error instanceof ApiError) toast(error.message);
    }
    if (conv.id === state.openId) renderChat();
  }

  function retryOutbox() {
    for (const conv of state.conversations.values()) {
      for (const [clientMsgId, entry] of conv.outbox) {
        if (entry.state === "waiting") deliver(conv, clientMsgId);
      }
    }
  }

  let readTimer = null;
  function markReadSoon() {
    clearTimeout(readTimer);
    readTimer = setTimeout(markRead, 150);
  }

  async function markRead() {
    const conv = state.openId && state.conversations.get(state.openId);
    if (!conv || !conv.loaded || !conv.summary || conv.marking) return;
    if (document.visibilityState !== "visible") return;
    const upto = conv.cursor;
    if (upto <= conv.summary.readSeq && conv.summary.unread === 0) return;
    conv.marking = true;
    try {
      const summary = await api(
        "POST",
        `/api/conversations/${encodeURIComponent(conv.id)}/read`,
        { readSeq: upto },
      );
      if (!conv.summary || summary.version >= conv.summary.version) conv.summary = summary;
      renderList();
    } catch (_) {
      // The next message or reconnect tries again.
    } finally {
      conv.marking = false;
    }
  }

  document.addEventListener("visibilitychange", markReadSoon);

  // -- views --------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function initials(text) {
    return text.replace(/[^A-Za-z0-9]/g, "").slice(0, 2) || "?";
  }

  function timeOf(ms) {
    if (!ms) return "";
    const when = new Date(ms);
    const today = new Date();
    if (when.toDateString() === today.toDateString()) {
      return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    return when.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  function setStatus(status) {
    const node = $("connection-status");
    node.dataset.state = status;
    node.textContent = status;
  }

  function sortedConversations() {
    const convs = [...state.conversations.values()].filter(
      (c) => c.summary || c.touched || (isGroup(c.id) && state.groups.has(c.id.slice(2))),
    );
    const key = (c) => Math.max(c.summary ? c.summary.lastAt : 0, c.touched);
    return convs.sort((a, b) => key(b) - key(a) || a.id.localeCompare(b.id));
  }

  function renderList() {
    const list = $("conversation-list");
    const convs = sortedConversations();
    list.replaceChildren(
      ...convs.map((conv) => {
        const s = conv.summary;
        const unread = s ? s.unread : 0;
        const title = titleOf(conv.id);
        let preview = "No messages yet";
        if (s) {
          const who = s.lastSenderId === state.userId ? "You: " : isGroup(conv.id) ? `${s.lastSenderId}: ` : "";
          preview = who + s.lastPreview;
        }
        return el(
          "li",
          {
            className: `conversation${conv.id === state.openId ? " active" : ""}${unread ? " unread" : ""}`,
            dataset: { testid: "conversation-item", conversationId: conv.id, unread: String(unread) },
            onclick: () => openConversation(conv.id),
          },
          el("span", { className: `avatar${isGroup(conv.id) ? " group" : ""}` }, initials(title)),
          el(
            "div",
            { className: "text" },
            el(
              "div",
              { className: "top" },
              el("span", { className: "title", dataset: { testid: "conversation-title" } }, title),
              el("span", { className: "time" }, s ? timeOf(s.lastAt) : ""),
            ),
            el(
              "div",
              { className: "bottom" },
              el("span", { className: "preview", dataset: { testid: "conversation-preview" } }, preview),
              el(
                "span",
                { className: "badge", dataset: { testid: "unread-badge" }, hidden: unread === 0 },
                String(unread),
              ),
            ),
          ),
        );
      }),
    );
    $("conversation-empty").hidden = convs.length > 0;
    const total = convs.reduce((n, c) => n + (c.summary ? c.summary.unread : 0), 0);
    document.title = total ? `(${total}) fleets_mailbox chat` : "fleets_mailbox chat";
  }

  function notificationText(n) {
    if (n.kind === "group_invite") {
      return `${n.payload.invitedBy} added you to ${n.payload.name}`;
    }
    return `${n.kind}: ${JSON.stringify(n.payload)}`;
  }

  function renderNotifications() {
    const items = [...state.notifications.values()].sort((a, b) => b.notificationId - a.notificationId);
    $("notification-list").replaceChildren(
      ...items.slice(0, 30).map((n) =>
        el(
          "li",
          {
            className: `notification${n.read ? "" : " unread"}`,
            dataset: { testid: "notification-item", notificationId: String(n.notificationId), kind: n.kind },
            onclick: () => openNotification(n),
          },
          el("span", {}, notificationText(n), el("br"), el("span", { className: "when" }, timeOf(n.createdAt))),
        ),
      ),
    );
    const unread = items.filter((n) => !n.read).length;
    const badge = $("notification-count");
    badge.textContent = String(unread);
    badge.hidden = unread === 0;
  }

  async function openNotification(n) {
    if (!n.read) {
      try {
        await api("POST", `/api/notifications/${n.notificationId}/read`);
        n.read = true;
      } catch (error) {
        toast(error.message);
      }
      renderNotifications();
    }
    if (n.kind === "group_invite" && n.payload.conversationId) {
      await refreshGroups().catch(() => {});
      openConversation(n.payload.conversationId);
    }
  }

  function renderChatHeader() {
    const id = state.openId;
    const title = titleOf(id);
    $("chat-title").textContent = title;
    const avatar = $("chat-avatar");
    avatar.textContent = initials(title);
    avatar.className = `avatar${isGroup(id) ? " group" : ""}`;
    const group = isGroup(id) ? state.groups.get(id.slice(2)) : null;
    $("chat-subtitle").textContent = group
      ? `${group.members.length} members · ${id}`
      : isGroup(id)
        ? `${id} · you are not a member`
        : `direct chat · ${id}`;
    $("members-toggle").hidden = !group;
    if (!group) $("group-panel").hidden = true;
    if (group) renderMembers(group);
    $("composer").hidden = isGroup(id) && !group;
  }

  function renderMembers(group) {
    const owner = group.ownerId === state.userId;
    $("member-list").replaceChildren(
      ...group.members.map((m) =>
        el(
          "li",
          { className: "member", dataset: { testid: "member", userId: m } },
          m,
          m === group.ownerId ? el("span", { className: "owner" }, "owner") : null,
          owner && m !== state.userId
            ? el("button", { type: "button", title: `Remove ${m}`, onclick: () => changeMembers(group, [], [m]) }, "×")
            : null,
        ),
      ),
    );
    $("member-form").hidden = !owner;
    $("leave-group").hidden = owner;
  }

  function renderChat() {
    if (!state.openId) return;
    const conv = conversation(state.openId);
    const list = $("message-list");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    const seqs = [...conv.messages.keys()].sort((a, b) => a - b);
    const group = isGroup(conv.id);
    const items = seqs.map((seq) => {
      const m = conv.messages.get(seq);
      const mine = m.senderId === state.userId;
      return el(
        "li",
        {
          className: `message${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`,
          dataset: { testid: "message", seq: String(m.seq), sender: m.senderId, messageId: m.messageId },
        },
        group && !mine ? el("span", { className: "sender" }, m.senderId) : null,
        el("div", { className: "bubble", dataset: { testid: "message-body" } }, m.deleted ? "message deleted" : m.body),
        el("span", { className: "meta" }, `${timeOf(m.createdAt)}${m.editedAt ? " · edited" : ""}`),
      );
    });
    for (const [clientMsgId, entry] of conv.outbox) {
      const label = { sending: "sending…", waiting: "waiting for the network…", failed: `not sent: ${entry.error}` }[entry.state];
      items.push(
        el(
          "li",
          { className: `message mine ${entry.state === "failed" ? "failed" : "pending"}`, dataset: { testid: "pending-message", clientMsgId } },
          el("div", { className: "bubble" }, entry.body),
          el(
            "span",
            { className: "meta" },
            label,
            entry.state === "failed"
              ? el("button", { type: "button", className: "link", onclick: () => deliver(conv, clientMsgId) }, "retry")
              : null,
          ),
        ),
      );
    }
    if (items.length === 0) {
      const text = conv.loaded ? "No messages yet. Say hello!" : conv.error ? conv.error.message : "Loading…";
      items.push(el("li", { className: "empty", dataset: { testid: "chat-note" } }, text));
    }
    list.replaceChildren(...items);
    if (nearBottom || list.dataset.conversationId !== conv.id) list.scrollTop = list.scrollHeight;
    list.dataset.conversationId = conv.id;
  }

  function openConversation(id) {
    const conv = conversation(id);
    if (!conv.summary && !conv.touched) conv.touched = Date.now();
    state.openId = id;
    $("chat-empty").hidden = true;
    $("chat-view").hidden = false;
    $("group-panel").hidden = true;
    renderChatHeader();
    renderChat();
    renderList();
    syncQuietly(conv);
    markReadSoon();
    $("message-input").focus();
  }

  async function changeMembers(group, add, remove) {
    try {
      const updated = await api("POST", `/api/groups/${encodeURIComponent(group.groupId)}/members`, { add, remove });
      if (updated.members.includes(state.userId)) state.groups.set(updated.groupId, updated);
      else state.groups.delete(updated.groupId);
      renderChatHeader();
      renderList();
    } catch (error) {
      toast(error.message);
    }
  }

  let toastTimer = null;
  function toast(text) {
    const node = $("toast");
    node.textContent = text;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      node.hidden = true;
    }, 4000);
  }

  // -- wiring ---------------------------------------------------------------------

  async function start() {
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("me").textContent = state.userId;
    $("me-avatar").textContent = initials(state.userId);
    renderList();
    renderNotifications();
    connect(); // "hello" triggers the first catch-up
  }

  function stop() {
    disconnect();
    localStorage.removeItem(STORAGE_KEY);
    location.reload();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = $("login-user").value.trim();
    $("login-error").textContent = "";
    if (!ID_RE.test(userId)) {
      $("login-error").textContent = "Use 1-128 letters, digits or _ . @ + -";
      return;
    }
    try {
      await login(userId);
      start();
    } catch (error) {
      $("login-error").textContent = error.message;
    }
  });

  $("logout-button").addEventListener("click", stop);

  $("direct-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const other = $("direct-user").value.trim();
    if (!ID_RE.test(other) || other === state.userId) {
      toast(other === state.userId ? "Pick another user than yourself" : "Not a valid user id");
      return;
    }
    $("direct-user").value = "";
    openConversation(directId(state.userId, other));
  });

  $("group-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const groupId = $("group-id").value.trim();
    const members = $("group-members").value.split(/[\s,]+/).filter(Boolean);
    try {
      const group = await api("POST", "/api/groups", { groupId, name: $("group-name").value, members });
      state.groups.set(group.groupId, group);
      $("group-form").reset();
      $("group-create").open = false;
      openConversation(group.conversationId);
    } catch (error) {
      toast(error.message);
    }
  });

  $("members-toggle").addEventListener("click", () => {
    $("group-panel").hidden = !$("group-panel").hidden;
    // Membership changes are not pushed: refresh when the panel opens.
    if (!$("group-panel").hidden) refreshGroups().catch(() => {});
  });

  $("member-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const group = state.groups.get(state.openId.slice(2));
    const userId = $("member-add").value.trim();
    if (!group || !userId) return;
    $("member-add").value = "";
    changeMembers(group, [userId], []);
  });

  $("leave-group").addEventListener("click", () => {
    const group = state.groups.get(state.openId.slice(2));
    if (group) changeMembers(group, [], [state.userId]);
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("message-input");
    const body = input.value;
    if (!body.trim() || !state.openId) return;
    input.value = "";
    send(conversation(state.openId), body);
  });

  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });

  const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
  if (saved && saved.userId && saved.token) {
    state.userId = saved.userId;
    state.token = saved.token;
    start();
  }
})();
