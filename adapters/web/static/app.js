// The playground page. Plain JS, no build step. Every piece of user text (prompts, names,
// captions) goes through textContent, never innerHTML: a prompt is shown, not parsed.
"use strict";

(() => {
  const FINAL = new Set(["done", "failed", "filtered"]);
  const state = {
    channels: [],
    channel: null,
    ws: null,
    wsRetry: 0,
    cards: new Map(), // key -> {el, seq}
    quotaTimer: null,
    pendingForm: null,
    stickToBottom: true,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function userName() {
    return $("name").value.trim();
  }

  // -- talking to the server ----------------------------------------------------------------

  async function post(path, body) {
    let answer;
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      answer = await response.json().catch(() => ({ error: `Server answered ${response.status}.` }));
    } catch (err) {
      answer = { error: "The playground server is not reachable." };
    }
    if (answer.error) showNotice({ text: answer.error, error: true });
    for (const reply of answer.replies || []) show(reply);
    refreshQuota(); // each action may have spent or refunded some of it
    return answer;
  }

  function runCommand(text) {
    return post("/api/command", { name: userName(), channel: state.channel, text });
  }

  function runAction(action, fields) {
    return post("/api/action", { name: userName(), channel: state.channel, action, fields: fields || {} });
  }

  function setQuota(text) {
    $("quota").textContent = text;
  }

  function refreshQuota() {
    clearTimeout(state.quotaTimer);
    state.quotaTimer = setTimeout(async () => {
      if (!userName()) return setQuota("");
      try {
        const response = await fetch(`/api/quota?name=${encodeURIComponent(userName())}`);
        const answer = await response.json();
        if (typeof answer.quota === "string") setQuota(answer.quota);
      } catch (err) {
        /* the badge refreshes after the next action */
      }
    }, 150);
  }

  function connect() {
    if (state.ws) {
      state.ws.onclose = null;
      state.ws.close();
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const query = `channel=${encodeURIComponent(state.channel)}&name=${encodeURIComponent(userName())}`;
    const ws = new WebSocket(`${proto}//${location.host}/ws?${query}`);
    state.ws = ws;
    setConnection("connecting");
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "history") {
        resetFeed();
        state.stickToBottom = true;
        for (const reply of message.replies) show(reply);
        state.wsRetry = 0;
        setConnection("live");
      } else if (message.type === "reply") {
        show(message.reply);
        const mine = message.reply.owner && message.reply.owner === ownId();
        if (mine && FINAL.has(message.reply.state)) refreshQuota();
      }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      setConnection("offline");
      const delay = Math.min(10000, 500 * 2 ** state.wsRetry++);
      setTimeout(() => state.ws === ws && connect(), delay);
    };
  }

  function ownId() {
    // Mirrors the server's normalisation closely enough to recognise our own jobs.
    return userName().toLowerCase().replace(/\s+/g, "_").replace(/[^a-z0-9_.-]/g, "").slice(0, 32);
  }

  function setConnection(text) {
    const node = $("conn");
    node.textContent = text;
    node.dataset.state = text;
  }

  // -- rendering replies --------------------------------------------------------------------

  function resetFeed() {
    state.cards.clear();
    $("feed").replaceChildren();
  }

  function show(reply) {
    if (reply.ephemeral) {
      if (reply.form) openForm(reply.form);
      if (reply.text || (reply.images || []).length) showNotice(reply);
      return;
    }
    if (reply.form) openForm(reply.form);
    if (reply.job_id) return upsertJob(reply);
    if (reply.parent_job_id) return appendUnder(reply);
    upsertMessage(reply);
  }

  function isStale(key, reply) {
    const known = state.cards.get(key);
    if (!known) return false;
    // seq 0 is (old-style) history: whatever is already on the page is at least as new.
    return reply.seq === 0 || reply.seq < known.seq;
  }

  function upsertJob(reply) {
    const key = `job:${reply.job_id}`;
    if (isStale(key, reply)) return;
    let card = state.cards.get(key)?.el;
    if (!card) {
      card = el("article", { class: "card job", "data-testid": "job-card", "data-job-id": reply.job_id });
      card.append(
        el("header", { class: "card-head" }),
        el("p", { class: "caption", "data-testid": "caption" }),
        el("p", { class: "notice", "data-testid": "card-notice" }),
        el("div", { class: "status", "data-testid": "status" }),
        el("div", { class: "images", "data-testid": "images" }),
        el("div", { class: "buttons", "data-testid": "buttons" }),
        el("div", { class: "attachments" }),
        el("div", { class: "children", "data-testid": "children" }),
      );
      placeCard(card, reply.parent_job_id);
      adoptOrphans(card, reply.job_id);
    }
    state.cards.set(key, { el: card, seq: reply.seq });
    if (reply.parent_job_id) card.dataset.parentJobId = reply.parent_job_id;
    card.dataset.state = reply.state || "";
    fillHead(card.querySelector(".card-head"), reply);
    card.querySelector(".caption").textContent = reply.text || "";
    card.querySelector(".notice").textContent = reply.notice || "";
    fillStatus(card.querySelector(".status"), reply);
    fillImages(card.querySelector(".images"), reply.images || []);
    fillButtons(card.querySelector(".buttons"), reply.buttons || []);
    scrollDown();
  }

  function placeCard(card, parentId) {
    const parent = parentId ? state.cards.get(`job:${parentId}`)?.el : null;
    if (parent) parent.querySelector(":scope > .children").append(card);
    else $("feed").append(card);
  }

  function adoptOrphans(card, jobId) {
    // A child can reach the page before its parent (history paging, reconnects).
    for (const orphan of $("feed").querySelectorAll(":scope > .card.job")) {
      if (orphan.dataset.parentJobId === jobId) card.querySelector(":scope > .children").append(orphan);
    }
  }

  function appendUnder(reply) {
    const key = `msg:${reply.ref}`;
    if (isStale(key, reply)) return;
    const parent = state.cards.get(`job:${reply.parent_job_id}`)?.el;
    let node = state.cards.get(key)?.el;
    if (!node) {
      node = el("div", { class: "attachment", "data-testid": "attachment" });
      if (parent) parent.querySelector(":scope > .attachments").append(node);
      else $("feed").append(node);
    }
    state.cards.set(key, { el: node, seq: reply.seq });
    fillMessage(node, reply);
    scrollDown();
  }

  function upsertMessage(reply) {
    const key = `msg:${reply.ref}`;
    if (isStale(key, reply)) return;
    let node = state.cards.get(key)?.el;
    if (!node) {
      node = el("article", { class: "card message", "data-testid": "message" });
      $("feed").append(node);
    }
    state.cards.set(key, { el: node, seq: reply.seq });
    fillMessage(node, reply);
    scrollDown();
  }

  function fillMessage(node, reply) {
    node.replaceChildren(
      el("p", { class: "caption", text: reply.text || "" }),
      reply.notice ? el("p", { class: "notice", text: reply.notice }) : null,
      el("div", { class: "images" }),
      el("div", { class: "buttons" }),
    );
    fillImages(node.querySelector(".images"), reply.images || []);
    fillButtons(node.querySelector(".buttons"), reply.buttons || []);
  }

  function fillHead(head, reply) {
    head.replaceChildren(
      el("span", { class: "owner", text: reply.owner ? `@${reply.owner}` : "", title: reply.meta?.owner_name || null }),
      el("span", { class: "job-id", text: reply.job_id ? `job ${reply.job_id}` : "" }),
      el("span", { class: `state state-${reply.state || "none"}`, "data-testid": "state", text: reply.state || "" }),
    );
  }

  function fillStatus(node, reply) {
    node.replaceChildren();
    if (reply.state === "queued") {
      const place = reply.position ? `#${reply.position} in line` : "in line";
      node.append(el("span", { class: "queued", text: `Queued, ${place}` }));
    } else if (reply.state === "running") {
      const progress = el("progress", { max: "1", "data-testid": "progress" });
      if (typeof reply.progress === "number") progress.value = reply.progress;
      const pct = typeof reply.progress === "number" ? ` ${Math.round(reply.progress * 100)}%` : "";
      node.append(el("span", { text: `Rendering${pct}` }), progress);
    }
  }

  function fillImages(node, images) {
    node.replaceChildren();
    for (const image of images) {
      if (!image.url) continue;
      const img = el("img", {
        src: image.url,
        alt: image.filename || "generated image",
        // 0 means "not known" (grids): let the browser size the picture itself.
        width: image.width > 0 ? image.width : null,
        height: image.height > 0 ? image.height : null,
        class: image.kind === "grid" ? "grid" : "full",
        "data-testid": image.kind === "grid" ? "grid-image" : "full-image",
      });
      const link = el("a", {
        href: image.download_url,
        download: image.filename || "",
        class: "download",
        "data-testid": "download",
        text: image.kind === "grid" ? "Download grid" : "Download full image",
      });
      node.append(el("figure", { class: `figure ${image.kind}` }, img, el("figcaption", {}, link)));
    }
  }

  function fillButtons(node, buttons) {
    node.replaceChildren();
    for (const button of buttons) {
      const b = el("button", {
        type: "button",
        class: `btn ${button.style || "secondary"}`,
        "data-action": button.action,
        text: button.label,
      });
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          await runAction(button.action);
        } finally {
          b.disabled = false;
        }
      });
      node.append(b);
    }
  }

  function showNotice(reply) {
    const box = $("notices");
    const item = el("div", {
      class: reply.error ? "notice-item error" : "notice-item",
      "data-testid": "notice",
    });
    const close = el("button", { type: "button", class: "close", "aria-label": "Dismiss", text: "×" });
    close.addEventListener("click", () => item.remove());
    item.append(close, el("p", { class: "notice-text", text: reply.text || "" }));
    if (reply.notice) item.append(el("p", { class: "notice", text: reply.notice }));
    if ((reply.images || []).length) {
      const images = el("div", { class: "images" });
      fillImages(images, reply.images);
      item.append(images);
    }
    if ((reply.buttons || []).length) {
      const buttons = el("div", { class: "buttons" });
      fillButtons(buttons, reply.buttons);
      item.append(buttons);
    }
    box.prepend(item);
    while (box.children.length > 4) box.lastElementChild.remove();
  }

  // -- the form dialog (Refine and friends) -------------------------------------------------

  function openForm(form) {
    const dialog = $("dialog");
    state.pendingForm = form;
    $("dialog-title").textContent = form.title || "";
    $("dialog-submit").textContent = form.submit_label || "Submit";
    const fields = $("dialog-fields");
    fields.replaceChildren();
    for (const field of form.fields || []) {
      const id = `field-${field.name}`;
      const label = el("label", { for: id, text: field.label || field.name });
      let input;
      if (field.kind === "number" && field.min !== null && field.max !== null) {
        // A bounded number (the img2img strength) is a slider with its value beside it.
        input = el("input", {
          id, name: field.name, type: "range", min: field.min, max: field.max,
          step: (field.max - field.min) / 20, "data-testid": `field-${field.name}`,
        });
        input.value = field.value;
        const out = el("output", { for: id, text: field.value });
        input.addEventListener("input", () => { out.textContent = input.value; });
        fields.append(el("div", { class: "field slider" }, label, input, out));
        continue;
      }
      if (field.kind === "number") {
        input = el("input", { id, name: field.name, type: "number", step: "any", "data-testid": `field-${field.name}` });
      } else {
        input = el("textarea", { id, name: field.name, rows: 3, "data-testid": `field-${field.name}` });
      }
      input.value = field.value || "";
      fields.append(el("div", { class: "field" }, label, input));
    }
    if (!dialog.open) dialog.showModal();
    fields.querySelector("textarea, input")?.focus();
  }

  function submitForm(event) {
    event.preventDefault();
    const form = state.pendingForm;
    if (!form) return;
    const values = {};
    for (const input of $("dialog-fields").querySelectorAll("input, textarea")) values[input.name] = input.value;
    state.pendingForm = null;
    $("dialog").close();
    runAction(form.action, values);
  }

  // -- channels and start-up ----------------------------------------------------------------

  function selectChannel(name) {
    state.channel = name;
    $("channel-title").textContent = `#${name}`;
    for (const link of $("channels").querySelectorAll("a")) {
      link.classList.toggle("active", link.dataset.channel === name);
      if (link.dataset.channel === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    resetFeed();
    connect();
  }

  function scrollDown() {
    // Follow new cards only while the reader is at the bottom: someone else's progress must
    // not yank the view away from an older result being looked at.
    const feed = $("feed");
    if (state.stickToBottom) feed.scrollTop = feed.scrollHeight;
  }

  function trackScroll() {
    const feed = $("feed");
    state.stickToBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 80;
  }

  // The hint under the line comes from the grammar's flag table: each flag with its one-line
  // help as a tooltip, the same text Discord shows for its options.
  function renderHint(flags) {
    const hint = $("hint");
    hint.replaceChildren(el("code", { text: "/imagine <prompt>" }));
    for (const flag of flags || []) {
      const shown = flag.value ? `${flag.name} ${flag.value}` : flag.name;
      hint.append(" ", el("code", { class: "flag", title: flag.help, text: shown }));
    }
    hint.append(" · ", el("code", { text: "/imagine help" }), " for every flag · ",
                el("code", { text: "/quota" }));
  }

  async function start() {
    const saved = localStorage.getItem("imagine-name");
    if (saved) $("name").value = saved;
    $("feed").addEventListener("scroll", trackScroll, { passive: true });
    const config = await (await fetch("/api/config")).json();
    state.channels = config.channels;
    renderHint(config.flags);
    for (const name of state.channels) {
      const link = el("a", { href: `#${name}`, "data-channel": name, text: `#${name}` });
      $("channels").append(link);
    }
    window.addEventListener("hashchange", () => {
      const wanted = location.hash.slice(1);
      if (state.channels.includes(wanted) && wanted !== state.channel) selectChannel(wanted);
    });
    const wanted = location.hash.slice(1);
    selectChannel(state.channels.includes(wanted) ? wanted : state.channels[0]);
    refreshQuota();

    $("name").addEventListener("change", () => {
      localStorage.setItem("imagine-name", userName());
      refreshQuota();
      connect(); // private replies follow the name
    });
    $("composer").addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = $("line").value.trim();
      if (!text) return;
      $("notices").replaceChildren();
      state.stickToBottom = true; // your own new card is what you want to see
      $("send").disabled = true;
      try {
        const answer = await runCommand(text);
        // Keep the line when it was refused (a bad flag) so it can be fixed in place.
        if ((answer.replies || []).some((r) => r.job_id)) $("line").value = "";
      } finally {
        $("send").disabled = false;
        $("line").focus();
      }
    });
    $("dialog-form").addEventListener("submit", submitForm);
    $("dialog-cancel").addEventListener("click", () => {
      state.pendingForm = null;
      $("dialog").close();
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
