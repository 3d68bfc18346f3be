// dapi-config operator console: plain JavaScript, no build step, no outside request.
// Everything is read and changed through the /admin/v1 routes; the token (when the service
// needs one: api.admin_token or a scoped token) is kept in sessionStorage for this tab and sent
// as a bearer header. What the token's role may not do is hidden.
"use strict";

(function () {
  const TOKEN_KEY = "dapi-config.admin-token";
  const FEED_SIZE = 50;
  const REFRESH_MS = 5000;
  // Rows drawn at first: a registry of thousands stays fast to show (the filter searches all;
  // "Show all" draws the rest).
  const PAGE_ROWS = 200;
  const tokenRequired = document.body.dataset.tokenRequired === "true";
  const $ = (id) => document.getElementById(id);
  const state = {
    nodes: [],
    editing: null,
    since: 0,
    watching: false,
    timer: null,
    showAll: false,
    confirming: null,
    kindEditing: null,
    session: 0,
  };

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || "HTTP " + status);
      this.status = status;
      this.body = body || {};
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, { body, headers, signal } = {}) {
    const sent = Object.assign({ Accept: "application/json" }, headers || {});
    const used = token();
    // Logged out: a late refresh of the last session is not sent (it would only be a 401,
    // counted against this client by the server's failure throttle).
    if (tokenRequired && !used) throw new ApiError(401, { error: "Not logged in." });
    if (used) sent.Authorization = "Bearer " + used;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      signal,
    });
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = { error: text };
      }
    }
    // A 401 logs out only the session that sent the request: a late answer to the last
    // session's request (its watch, a refresh) must not end a new login.
    if (response.status === 401 && tokenRequired && used === token()) {
      logout("The token was refused; log in again.");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, etag: response.headers.get("ETag") };
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // Times in UTC, as the CLI, the API and the logs write them (not the browser's zone).
  function utc(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return String(iso);
    return when.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }

  function showError(error) {
    const box = $("action-error");
    box.textContent = error instanceof Error ? error.message : String(error);
    box.hidden = false;
  }

  function clearError() {
    $("action-error").hidden = true;
  }

  // -- health strip ---------------------------------------------------------------------------

  async function refreshHealth() {
    const { data } = await api("GET", "/admin/v1/overview");
    const ready = $("h-ready");
    ready.textContent = data.ready ? "ready" : "not ready";
    ready.className = "value " + (data.ready ? "ok" : "bad");
    $("h-height").textContent = data.height.toLocaleString("en-US");
    $("h-version").textContent = data.current_node_version || "(none)";
    $("h-next").textContent = data.next_version
      ? data.next_version.version + " at " + data.next_version.height.toLocaleString("en-US")
      : "none scheduled";
    $("h-state").textContent = data.backend + " (" + data.state_mode + ") " + data.state_location;
    const backup = $("h-backup");
    backup.textContent = age(data.last_backup_at);
    // No backup at all, or none for over a day, is worth a look even when all else is fine.
    const stale = data.last_backup_at === null || Date.now() / 1000 - data.last_backup_at > 86400;
    backup.className = "value" + (stale ? " bad" : "");
    backup.title = stale ? "Take one: Back up now, or dapi-config backup" : "";
    $("h-export").textContent = age(data.last_export_at);
    $("h-problems").replaceChildren(...data.problems.map((p) => el("li", {}, p)));
    const kept = data.kept_as_the_predecessor_accepted || [];
    state.marks = {};
    for (const mark of kept) {
      if (mark.node_id !== null) (state.marks[mark.node_id] = state.marks[mark.node_id] || []).push(mark.note);
    }
    $("h-kept").hidden = kept.length === 0;
    $("h-kept-list").replaceChildren(
      ...kept.map((m) => el("li", {}, (m.node_id === null ? "config file" : "node " + m.node_id) + ": " + m.note))
    );
    if (state.nodes.length) renderNodes();
  }

  // -- nodes ----------------------------------------------------------------------------------

  function address(node) {
    if (node.base_url) return node.base_url;
    if (node.url) return node.url;
    return node.host + ":" + node.inference_port + (node.poc_port ? " / " + node.poc_port : "");
  }

  function hardware(node) {
    return (node.hardware || []).map((h) => h.count + "× " + h.type).join(", ");
  }

  function matches(node, filter) {
    if (!filter) return true;
    const text = [node.id, address(node), ...Object.keys(node.models || {})].join(" ");
    return text.toLowerCase().includes(filter);
  }

  function keptMark(id) {
    // A value the predecessor accepted and new input would not: marked, its note on hover.
    const notes = (state.marks || {})[id];
    if (!notes) return [];
    const mark = el("span", { class: "mark", title: notes.join("\n") }, "kept as before");
    mark.setAttribute("aria-label", "kept as the predecessor accepted it: " + notes.join("; "));
    return [mark];
  }

  function renderNodes() {
    const filter = $("node-filter").value.trim().toLowerCase();
    const rows = document.createDocumentFragment();
    let shown = 0;
    let matching = 0;
    for (const node of state.nodes) {
      if (!matches(node, filter)) continue;
      matching += 1;
      if (shown >= PAGE_ROWS && !state.showAll) continue;
      shown += 1;
      const toggle = el("input", { type: "checkbox", checked: node.is_enabled, title: "Enabled" });
      toggle.disabled = !may("write");
      toggle.setAttribute("aria-label", "enabled " + node.id);
      toggle.addEventListener("change", () => setEnabled(node.id, toggle.checked, toggle));
      const confirming = state.confirming && state.confirming.id === node.id && Date.now() < state.confirming.until;
      const remove = el("button", { type: "button", class: "danger", "data-needs": "write" }, confirming ? "Really remove " + node.id + "?" : "Remove");
      if (confirming) remove.dataset.confirm = "yes";
      remove.addEventListener("click", () => confirmRemove(node.id, remove));
      const edit = el("button", { type: "button", "data-needs": "write" }, "Edit");
      edit.addEventListener("click", () => openEditor(node.id));
      rows.append(
        el(
          "tr",
          { "data-node": node.id },
          el("td", {}, node.id),
          el("td", {}, address(node), ...keptMark(node.id)),
          el("td", {}, Object.keys(node.models || {}).join(", ")),
          el("td", { class: "num" }, node.max_concurrent),
          el("td", {}, hardware(node)),
          el("td", {}, toggle),
          el("td", { class: "actions" }, edit, remove)
        )
      );
    }
    if (shown < matching) {
      const more = el("button", { type: "button", id: "show-all" }, "Show all " + matching);
      more.addEventListener("click", () => {
        state.showAll = true;
        renderNodes();
      });
      rows.append(el("tr", {}, el("td", { colSpan: 7, class: "more" }, shown + " of " + matching + " shown ", more)));
    }
    if (!matching) {
      const why = state.nodes.length
        ? "No node matches the filter."
        : "No nodes yet: Add node, or dapi-config nodes add FILE.";
      rows.append(el("tr", { class: "empty" }, el("td", { colSpan: 7, class: "hint" }, why)));
    }
    $("node-table").tBodies[0].replaceChildren(rows);
    $("node-count").textContent =
      matching === state.nodes.length ? "(" + matching + ")" : "(" + matching + " of " + state.nodes.length + ")";
  }

  async function refreshNodes() {
    const { data } = await api("GET", "/admin/v1/nodes");
    state.nodes = data.map((entry) => entry.node);
    renderNodes();
  }

  async function setEnabled(id, enabled, toggle) {
    clearError();
    try {
      await api("POST", "/admin/v1/nodes/" + encodeURIComponent(id) + (enabled ? "/enable" : "/disable"));
      await refreshNodes();
    } catch (error) {
      toggle.checked = !enabled;
      showError(error);
    }
  }

  function confirmRemove(id, button) {
    // The first click arms the button for 5 s (kept across table refreshes); the second removes.
    if (button.dataset.confirm !== "yes") {
      state.confirming = { id, until: Date.now() + 5000 };
      button.dataset.confirm = "yes";
      button.textContent = "Really remove " + id + "?";
      setTimeout(() => {
        if (state.confirming && state.confirming.id === id) state.confirming = null;
        button.dataset.confirm = "";
        button.textContent = "Remove";
      }, 5000);
      return;
    }
    state.confirming = null;
    clearError();
    api("DELETE", "/admin/v1/nodes/" + encodeURIComponent(id))
      .then(refreshAll)
      .catch(showError);
  }

  const TEMPLATE = {
    id: "",
    host: "",
    inference_port: 5000,
    poc_port: 8080,
    max_concurrent: 4,
    models: {},
    hardware: [],
  };

  async function openEditor(id) {
    clearError();
    const editor = $("editor");
    $("editor-errors").replaceChildren();
    if (id === null) {
      state.editing = { id: null, etag: null };
      $("editor-title").textContent = "Add a node";
      $("editor-json").value = JSON.stringify(TEMPLATE, null, 2);
    } else {
      const { data, etag } = await api("GET", "/admin/v1/nodes/" + encodeURIComponent(id));
      state.editing = { id, etag };
      $("editor-title").textContent = "Edit " + id;
      $("editor-json").value = JSON.stringify(data, null, 2);
    }
    editor.hidden = false;
    $("editor-json").focus();
  }

  function editorError(field, message) {
    const item = el("li", {}, field ? el("code", {}, field) : null, field ? ": " : "", message);
    $("editor-errors").append(item);
  }

  async function saveEditor(event) {
    event.preventDefault();
    $("editor-errors").replaceChildren();
    let body;
    try {
      body = JSON.parse($("editor-json").value);
    } catch (error) {
      editorError(null, "not valid JSON: " + error.message);
      return;
    }
    const { id, etag } = state.editing;
    try {
      if (id === null) {
        await api("POST", "/admin/v1/nodes", { body });
      } else {
        await api("PUT", "/admin/v1/nodes/" + encodeURIComponent(id), {
          body,
          headers: { "If-Match": etag },
        });
      }
      $("editor").hidden = true;
      state.editing = null;
      await refreshAll();
    } catch (error) {
      if (error.status === 412) {
        editorError(
          null,
          "This node was changed elsewhere since you opened it; nothing was saved. " +
            "Cancel and edit it again to see the current version."
        );
      } else if (error.body && Array.isArray(error.body.errors)) {
        for (const problem of error.body.errors) editorError(problem.field, problem.message);
      } else {
        editorError(null, error.message);
      }
    }
  }

  // -- state: every value of the catalogue, the schedule, the seeds -------------------------

  const STATE = "/admin/v1/state/";

  function brief(value) {
    // One line for the table: a number as it is, an object as compact JSON.
    const text = typeof value === "object" ? JSON.stringify(value) : String(value);
    return text.length > 140 ? text.slice(0, 137) + "..." : text;
  }

  async function refreshState() {
    const rows = Array.from(document.querySelectorAll("#kind-table tr[data-path]"));
    await Promise.all(
      rows.map(async (row) => {
        const { data } = await api("GET", STATE + row.dataset.path);
        row.querySelector(".kind-value").textContent = brief(data);
      })
    );
    const { data } = await api("GET", STATE + "node-versions");
    const body = document.createDocumentFragment();
    for (const entry of data) {
      const remove = el("button", { type: "button", class: "danger", "data-needs": "write" }, "Remove");
      remove.addEventListener("click", () => unschedule(entry.height, entry.version));
      body.append(
        el(
          "tr",
          { "data-version": entry.height + "/" + entry.version },
          el("td", { class: "num" }, entry.height.toLocaleString("en-US")),
          el("td", {}, entry.version),
          el("td", { class: "actions" }, remove)
        )
      );
    }
    if (!data.length) body.append(el("tr", {}, el("td", { colSpan: 3, class: "hint" }, "Nothing scheduled.")));
    $("schedule-table").tBodies[0].replaceChildren(body);
  }

  function kindError(field, message) {
    $("kind-editor-errors").append(el("li", {}, field ? el("code", {}, field) : null, field ? ": " : "", message));
  }

  async function openKindEditor(row) {
    clearError();
    $("kind-editor-errors").replaceChildren();
    const { data, etag } = await api("GET", STATE + row.dataset.path);
    state.kindEditing = { path: row.dataset.path, name: row.dataset.kind, etag };
    $("kind-editor-title").textContent = "Edit " + row.dataset.kind;
    // The height is set as {"height": N}: its reply also says the version current at it.
    const shown = row.dataset.path === "height" ? { height: data.height } : data;
    $("kind-editor-json").value = JSON.stringify(shown, null, 2);
    $("kind-editor").hidden = false;
    $("kind-editor-json").focus();
  }

  async function saveKindEditor(event) {
    event.preventDefault();
    $("kind-editor-errors").replaceChildren();
    let body;
    try {
      body = JSON.parse($("kind-editor-json").value);
    } catch (error) {
      kindError(null, "not valid JSON: " + error.message);
      return;
    }
    const { path, etag } = state.kindEditing;
    try {
      await api("PUT", STATE + path, { body, headers: { "If-Match": etag } });
      $("kind-editor").hidden = true;
      state.kindEditing = null;
      await Promise.all([refreshState(), refreshHealth()]);
    } catch (error) {
      if (error.status === 412) {
        kindError(null, "This value was changed elsewhere since you opened it; nothing was saved. Cancel and edit it again to see the current value.");
      } else if (error.body && Array.isArray(error.body.errors)) {
        for (const problem of error.body.errors) kindError(problem.field, problem.message);
      } else {
        kindError(null, error.message);
      }
    }
  }

  async function clearKind(row, button) {
    clearError();
    if (button.dataset.confirm !== "yes") {
      button.dataset.confirm = "yes";
      button.textContent = "Really cancel " + row.dataset.kind + "?";
      setTimeout(() => {
        button.dataset.confirm = "";
        button.textContent = "Cancel";
      }, 5000);
      return;
    }
    try {
      await api("DELETE", STATE + row.dataset.path);
      await Promise.all([refreshState(), refreshHealth()]);
    } catch (error) {
      showError(error);
    }
  }

  async function schedule() {
    clearError();
    const height = Number($("schedule-height").value);
    const version = $("schedule-version").value.trim();
    try {
      await api("POST", STATE + "node-versions", { body: { height, version } });
      $("schedule-height").value = "";
      $("schedule-version").value = "";
      await Promise.all([refreshState(), refreshHealth()]);
    } catch (error) {
      showError(error);
    }
  }

  async function unschedule(height, version) {
    clearError();
    try {
      await api("DELETE", STATE + "node-versions/" + height + "/" + encodeURIComponent(version));
      await Promise.all([refreshState(), refreshHealth()]);
    } catch (error) {
      showError(error);
    }
  }

  async function rotateSeeds() {
    clearError();
    try {
      await api("POST", STATE + "seeds/rotate");
      await refreshState();
    } catch (error) {
      showError(error);
    }
  }

  // -- keys -----------------------------------------------------------------------------------

  async function refreshKeys() {
    // Only nodes that have a key get a row (a registry of thousands stays one screen); the
    // others are offered in the "create" list.
    const { data } = await api("GET", "/admin/v1/security-keys");
    const keyed = new Set(data.map((k) => k.node_id));
    const rows = document.createDocumentFragment();
    for (const key of data) {
      const button = el("button", { type: "button", "data-needs": "admin" }, "Rotate");
      button.addEventListener("click", () => issueKey(key.node_id, true));
      rows.append(
        el(
          "tr",
          { "data-key-node": key.node_id },
          el("td", {}, key.node_id),
          el("td", { class: "num" }, key.key_version),
          el("td", {}, el("code", {}, key.fingerprint)),
          el("td", {}, utc(key.updated_at)),
          el("td", { class: "actions" }, button)
        )
      );
    }
    if (!data.length) {
      rows.append(el("tr", { class: "empty" }, el("td", { colSpan: 5, class: "hint" }, "No node has a security key yet.")));
    }
    $("key-table").tBodies[0].replaceChildren(rows);
    const choices = state.nodes.filter((n) => !keyed.has(n.id)).map((n) => el("option", { value: n.id }, n.id));
    const picker = $("key-node");
    const chosen = picker.value; // a refresh (a change elsewhere) must not lose the operator's pick
    picker.replaceChildren(el("option", { value: "" }, "a node without a key…"), ...choices);
    if (chosen && choices.some((option) => option.value === chosen)) picker.value = chosen;
    $("create-key").disabled = choices.length === 0;
  }

  async function issueKey(id, rotate) {
    clearError();
    try {
      const path = "/admin/v1/nodes/" + encodeURIComponent(id) + "/security-key" + (rotate ? "/rotate" : "");
      const { data } = await api("POST", path);
      $("new-key-node").textContent = data.node_id;
      $("new-key-version").textContent = data.key_version;
      $("new-key-value").textContent = data.security_key;
      $("new-key").hidden = false;
      await refreshKeys();
    } catch (error) {
      showError(error);
    }
  }

  function dismissKey() {
    $("new-key-value").textContent = "";
    $("new-key").hidden = true;
  }

  // -- changes (the audit feed, live) -----------------------------------------------------------

  function show(value) {
    if (value === null || value === undefined) return "—";
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > 160 ? text.slice(0, 157) + "…" : text;
  }

  function feedItem(entry) {
    return el(
      "li",
      { "data-revision": entry.revision },
      el("button", { type: "button", class: "rev link", title: "Show the state at this revision", onclick: () => showRevision(entry.revision).catch(showError) }, "#" + entry.revision),
      " ",
      el("time", { dateTime: entry.at }, utc(entry.at)),
      " ",
      el("strong", {}, entry.actor),
      " ",
      el("span", { class: "action" }, entry.action),
      entry.target ? " " + entry.target : "",
      el("div", { class: "change" }, el("code", {}, show(entry.old_value)), " → ", el("code", {}, show(entry.new_value)))
    );
  }

  // -- the state at a revision, and restoring to it ------------------------------------------

  async function showRevision(revision) {
    clearError();
    const at = "?revision=" + encodeURIComponent(revision);
    const [{ data: past }, { data: nodes }] = await Promise.all([
      api("GET", "/admin/v1/state" + at),
      api("GET", "/admin/v1/nodes" + at),
    ]);
    $("travel-revision").value = revision;
    $("travel-title").textContent = "The state right after revision " + revision;
    const shown = Object.assign({}, past, { nodes: nodes.map((n) => n.node.id + " " + n.node.host) });
    $("travel-state").textContent = JSON.stringify(shown, null, 2);
    const button = $("travel-restore");
    button.dataset.confirm = "";
    button.textContent = "Restore to here";
    if (may("admin")) {
      const { data: preview } = await api("POST", "/admin/v1/restore", { body: { revision, dry_run: true } });
      const lines = preview.changes.length ? preview.changes : ["nothing: the state is as it was then"];
      $("travel-changes").replaceChildren(...lines.map((line) => el("li", {}, line)));
      button.disabled = !preview.changes.length;
    }
    state.travel = revision;
    $("travel-view").hidden = false;
  }

  async function restoreHere() {
    clearError();
    const button = $("travel-restore");
    if (button.dataset.confirm !== "yes") {
      button.dataset.confirm = "yes";
      button.textContent = "Really restore revision " + state.travel + "?";
      return;
    }
    try {
      await api("POST", "/admin/v1/restore", { body: { revision: state.travel } });
      $("travel-view").hidden = true;
      await refreshAll();
    } catch (error) {
      showError(error);
    }
  }

  function addToFeed(entries) {
    const feed = $("feed");
    for (const entry of entries) {
      feed.prepend(feedItem(entry));
      state.since = Math.max(state.since, entry.revision);
    }
    while (feed.children.length > FEED_SIZE) feed.lastElementChild.remove();
  }

  async function loadFeed() {
    const { data } = await api("GET", "/admin/v1/audit?limit=1");
    const from = Math.max(0, data.latest_revision - FEED_SIZE);
    const page = await api("GET", "/admin/v1/audit?since=" + from + "&limit=" + FEED_SIZE);
    $("feed").replaceChildren();
    state.since = from;
    addToFeed(page.data.entries);
  }

  async function watch() {
    // One loop per login: a loop of an earlier session ends at its next turn.
    const session = ++state.session;
    state.watching = true;
    while (state.watching && session === state.session) {
      try {
        const { data } = await api("GET", "/admin/v1/audit?since=" + state.since + "&wait=25&limit=100");
        if (data.entries.length) {
          addToFeed(data.entries);
          refreshSoon();
        }
      } catch (error) {
        if (!state.watching || session !== state.session) return;
        await new Promise((resolve) => setTimeout(resolve, 3000));
      }
    }
  }

  // -- backups --------------------------------------------------------------------------------

  async function refreshBackups() {
    let list;
    try {
      ({ data: list } = await api("GET", "/admin/v1/backups"));
    } catch (error) {
      if (error.status === 501) {
        $("backup-table").tBodies[0].replaceChildren(el("tr", {}, el("td", { colSpan: 5 }, error.message)));
        $("backup-now").disabled = true;
        return;
      }
      throw error;
    }
    const rows = document.createDocumentFragment();
    for (const b of list) {
      rows.append(
        el(
          "tr",
          {},
          el("td", {}, utc(b.created_at)),
          el("td", {}, b.reason),
          el("td", { class: "num" }, b.revision),
          el("td", { class: "num" }, (b.size / 1024).toFixed(0) + " KiB"),
          el("td", { class: b.ok ? "ok" : "bad" }, b.ok ? "verified" : "damaged: " + b.problem)
        )
      );
    }
    if (!rows.childNodes.length) {
      rows.append(el("tr", { class: "empty" }, el("td", { colSpan: 5, class: "hint" }, "No backup yet: Back up now, or dapi-config backup.")));
    }
    $("backup-table").tBodies[0].replaceChildren(rows);
  }

  async function backupNow() {
    clearError();
    $("backup-now").disabled = true;
    try {
      await api("POST", "/admin/v1/backups");
      await Promise.all([refreshBackups(), refreshHealth()]);
    } catch (error) {
      showError(error);
    } finally {
      $("backup-now").disabled = false;
    }
  }

  // -- the page -------------------------------------------------------------------------------

  let soon = null;
  function refreshSoon() {
    if (soon) return;
    soon = setTimeout(() => {
      soon = null;
      refreshAll().catch(showError);
    }, 200);
  }

  async function refreshAll() {
    await Promise.all([refreshHealth(), refreshNodes(), refreshBackups(), refreshState()]);
    await refreshKeys();
  }

  // What the token may do: controls it may not use are hidden (data-needs, see console.css);
  // the server checks every request anyway.
  const ROLES = ["read", "write", "admin"];
  function may(role) {
    return ROLES.indexOf(document.body.dataset.role || "read") >= ROLES.indexOf(role);
  }

  async function start() {
    const { data: me } = await api("GET", "/admin/v1/whoami");
    document.body.dataset.role = me.role;
    $("whoami").textContent = (me.name || (tokenRequired ? "admin token" : "no token")) + " · " + me.role;
    $("login").hidden = true;
    $("console").hidden = false;
    $("logout").hidden = !tokenRequired;
    await refreshAll();
    await loadFeed();
    watch();
    state.timer = setInterval(() => refreshHealth().catch(() => {}), REFRESH_MS);
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    delete document.body.dataset.role;
    state.session += 1;
    $("whoami").textContent = "";
    state.watching = false;
    if (state.timer) clearInterval(state.timer);
    if (soon) clearTimeout(soon);
    soon = null;
    $("console").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
  }

  async function login(event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    try {
      await api("GET", "/admin/v1/whoami");
    } catch (error) {
      logout(error.status === 401 ? "Wrong token." : error.message);
      return;
    }
    $("token").value = "";
    $("login-error").textContent = "";
    start().catch(showError);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout(""));
    $("node-filter").addEventListener("input", renderNodes);
    $("add-node").addEventListener("click", () => openEditor(null).catch(showError));
    $("editor").addEventListener("submit", saveEditor);
    $("editor-cancel").addEventListener("click", () => {
      $("editor").hidden = true;
      state.editing = null;
    });
    $("new-key-dismiss").addEventListener("click", dismissKey);
    $("create-key").addEventListener("click", () => {
      const id = $("key-node").value;
      if (id) issueKey(id, false);
    });
    $("backup-now").addEventListener("click", backupNow);
    $("travel").addEventListener("submit", (event) => {
      event.preventDefault();
      showRevision(Number($("travel-revision").value)).catch(showError);
    });
    $("travel-restore").addEventListener("click", restoreHere);
    $("travel-close").addEventListener("click", () => {
      $("travel-view").hidden = true;
    });
    for (const row of document.querySelectorAll("#kind-table tr[data-path]")) {
      row.querySelector(".kind-edit").addEventListener("click", () => openKindEditor(row).catch(showError));
      const clear = row.querySelector(".kind-clear");
      if (clear) clear.addEventListener("click", () => clearKind(row, clear));
    }
    $("kind-editor").addEventListener("submit", saveKindEditor);
    $("kind-editor-cancel").addEventListener("click", () => {
      $("kind-editor").hidden = true;
      state.kindEditing = null;
    });
    $("schedule-add").addEventListener("click", schedule);
    $("rotate-seeds").addEventListener("click", rotateSeeds);
    if (tokenRequired && !token()) {
      $("login").hidden = false;
      return;
    }
    start().catch(showError);
  });
})();
