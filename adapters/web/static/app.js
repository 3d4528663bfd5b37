// The playground page. Plain JS, no build step. Every piece of user text (prompts, names,
// captions) goes through textContent, never innerHTML: a prompt is shown, not parsed.
//
// Sections: helpers · who you are · talking to the server · the socket · cards · images on
// cards · the card menu and Delete with undo · notices · the form dialog · the lightbox ·
// uploads · the gallery · lineage · channels and the composer · start-up.
"use strict";

(() => {
  const FINAL = new Set(["done", "failed", "filtered", "cancelled"]);
  // Buttons that belong on an image (their action names it: verb:job:index) versus on the card.
  const INDEXED = /^([a-z][a-z-]*):([a-z2-9]{12}):(\d{1,2})$/;
  const UNDO_MS = 6000;
  const LINES_KEPT = 50;
  const state = {
    channels: [],
    channel: null,
    ws: null,
    wsRetry: 0,
    cards: new Map(), // ref -> {el, seq, reply}
    linked: null, // {name, user_id, admin} when this browser opened a personal link
    quotaTimer: null,
    pendingForm: null,
    stickToBottom: true,
    initImage: null, // File to start the next /imagine from
    maxUpload: 20 * 1024 * 1024,
    pendingDeletes: new Map(), // action -> {timer, card, notice}
    lines: [],
    lineAt: -1,
    draft: "",
    lightbox: { items: [], at: 0 },
    gallery: { scope: "channel", query: "", next: null, loading: false, done: false, items: [], token: 0 },
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
    for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
    return node;
  }

  // replaceChildren would write a null as the text "null": this skips the empty ones.
  function fill(node, ...children) {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function button(label, attrs, onClick) {
    const b = el("button", { type: "button", ...attrs, text: label });
    b.addEventListener("click", (event) => {
      event.stopPropagation();
      onClick(event, b);
    });
    return b;
  }

  // -- who you are --------------------------------------------------------------------------

  const ADJECTIVES = ["amber", "brave", "calm", "clever", "cosy", "curious", "daring", "gentle",
    "jolly", "keen", "lucky", "merry", "nimble", "quiet", "rapid", "sunny", "swift", "witty"];
  const ANIMALS = ["badger", "crane", "falcon", "fox", "heron", "ibex", "koala", "lynx", "marten",
    "newt", "otter", "owl", "panda", "puffin", "quail", "robin", "seal", "wren"];

  function guestName() {
    const pick = (list) => list[Math.floor(Math.random() * list.length)];
    const cap = (word) => word[0].toUpperCase() + word.slice(1);
    return `${cap(pick(ADJECTIVES))} ${cap(pick(ANIMALS))} ${10 + Math.floor(Math.random() * 90)}`;
  }

  function userName() {
    return state.linked ? state.linked.name : $("name").value.trim();
  }

  function ownId() {
    if (state.linked) return state.linked.user_id;
    // Mirrors the server's normalisation closely enough to recognise our own jobs.
    return userName().toLowerCase().replace(/\s+/g, "_").replace(/[^a-z0-9_.-]/g, "").slice(0, 32);
  }

  function showIdentity() {
    const linked = $("linked");
    if (state.linked) {
      $("name").closest("label").hidden = true;
      linked.hidden = false;
      linked.textContent = `@${state.linked.user_id}`;
      linked.title = `Signed in by your personal link as ${state.linked.name}` +
        (state.linked.admin ? " (admin)" : "");
      if (state.linked.admin) linked.append(el("span", { class: "admin-mark", text: " admin" }));
    }
  }

  // -- talking to the server ----------------------------------------------------------------

  async function request(path, init) {
    let answer;
    try {
      const response = await fetch(path, { credentials: "same-origin", ...init });
      answer = await response.json().catch(() => ({ error: `The server answered ${response.status}.` }));
    } catch (err) {
      answer = { error: "The playground server is not reachable." };
    }
    if (answer.error) showNotice({ text: answer.error, error: true });
    for (const reply of answer.replies || []) show(reply);
    refreshQuota(); // each action may have spent or refunded some of it
    return answer;
  }

  function post(path, body) {
    return request(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  function runCommand(text) {
    if (state.initImage) {
      const form = new FormData();
      form.append("name", userName());
      form.append("channel", state.channel);
      form.append("text", text);
      form.append("image", state.initImage, state.initImage.name || "image");
      return request("/api/imagine", { method: "POST", headers: { "X-Imagine-Upload": "1" }, body: form });
    }
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
    }, 120);
  }

  // -- the socket: history first, then batches of cards, deltas and removals ------------------

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
      } else if (message.type === "batch") {
        for (const item of message.items) apply(item);
      }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      setConnection("offline");
      const delay = Math.min(10000, 500 * 2 ** state.wsRetry++);
      setTimeout(() => state.ws === ws && connect(), delay);
    };
  }

  function apply(item) {
    if (item.op === "card") show(item.reply);
    else if (item.op === "delta") {
      const known = state.cards.get(item.ref);
      if (!known || item.seq < known.seq) return; // a whole card follows when we lack the base
      show({ ...known.reply, ...item.set, seq: item.seq });
    } else if (item.op === "remove") removeCard(item.ref);
    else if (item.op === "quota") setQuota(item.quota);
  }

  function setConnection(text) {
    const node = $("conn");
    node.textContent = text;
    node.dataset.state = text;
  }

  // -- cards ---------------------------------------------------------------------------------

  function resetFeed() {
    state.cards.clear();
    $("feed").replaceChildren();
  }

  function show(reply) {
    if (reply.removed) return removeCard(reply.ref);
    if (reply.form) openForm(reply.form);
    if (reply.ephemeral) {
      if (reply.text || (reply.images || []).length) showNotice(reply);
      return;
    }
    if (reply.state === "deleted") return removeCard(reply.ref);
    const known = state.cards.get(reply.ref);
    if (known && reply.seq < known.seq) return; // older than what is shown
    if (reply.job_id) upsertJob(reply);
    else if (reply.parent_job_id) upsertAttachment(reply);
    else upsertMessage(reply);
  }

  function remember(ref, node, reply) {
    state.cards.set(ref, { el: node, seq: reply.seq, reply });
  }

  function upsertJob(reply) {
    let card = state.cards.get(reply.ref)?.el;
    if (!card) {
      card = el("article", { class: "card job", "data-testid": "job-card", "data-job-id": reply.job_id, "data-ref": reply.ref });
      card.append(
        el("header", { class: "card-head" }),
        el("p", { class: "caption", "data-testid": "caption" }),
        el("p", { class: "notice", "data-testid": "card-notice" }),
        el("div", { class: "status", "data-testid": "status" }),
        el("div", { class: "tiles", "data-testid": "images" }),
        el("div", { class: "buttons", "data-testid": "buttons" }),
        el("div", { class: "attachments" }),
        el("div", { class: "children", "data-testid": "children" }),
      );
      placeCard(card, reply.parent_job_id);
      adoptOrphans(card, reply.job_id);
    }
    remember(reply.ref, card, reply);
    if (reply.parent_job_id) card.dataset.parentJobId = reply.parent_job_id;
    const outcome = reply.outcome || reply.state || "";
    card.dataset.state = reply.state || "";
    card.dataset.outcome = outcome;
    fillHead(card.querySelector(".card-head"), reply, outcome);
    card.querySelector(".caption").textContent = reply.text || "";
    card.querySelector(".notice").textContent = reply.notice || "";
    fillStatus(card.querySelector(".status"), reply);
    const perImage = fillTiles(card.querySelector(".tiles"), reply);
    // Buttons on the images are not repeated below; the card's own go to its menu, except a
    // queued job's Cancel, which is what one looks for while waiting.
    const all = reply.buttons || [];
    const inline = reply.state === "queued" ? all
      : perImage ? [] : all.filter((b) => INDEXED.test(b.action));
    fillButtons(card.querySelector(".buttons"), inline);
    scrollDown();
  }

  function placeCard(card, parentId) {
    const parent = parentId ? state.cards.get(parentId)?.el : null;
    if (parent) parent.querySelector(":scope > .children").append(card);
    else $("feed").append(card);
  }

  function adoptOrphans(card, jobId) {
    // A child can reach the page before its parent (history paging, reconnects).
    for (const orphan of $("feed").querySelectorAll(":scope > .card")) {
      if (orphan.dataset.parentJobId === jobId) {
        const into = orphan.classList.contains("job") ? ".children" : ".attachments";
        card.querySelector(`:scope > ${into}`).append(orphan);
      }
    }
  }

  function removeCard(ref) {
    const known = state.cards.get(ref);
    if (!known) return;
    const node = known.el;
    // Someone else's refinement of a deleted job stays: it moves up to where its parent was.
    const children = node.querySelector(":scope > .children");
    if (children) for (const child of [...children.children]) node.before(child);
    for (const inner of node.querySelectorAll("[data-ref]")) state.cards.delete(inner.dataset.ref);
    node.remove();
    state.cards.delete(ref);
  }

  function upsertAttachment(reply) {
    // A Pick: the image at full size under its job, with that image's own buttons.
    let node = state.cards.get(reply.ref)?.el;
    if (!node) {
      node = el("div", { class: "card attachment", "data-testid": "attachment", "data-ref": reply.ref, "data-parent-job-id": reply.parent_job_id });
      const parent = state.cards.get(reply.parent_job_id)?.el;
      if (parent) parent.querySelector(":scope > .attachments").append(node);
      else $("feed").append(node);
    }
    remember(reply.ref, node, reply);
    // Alt text from the prompt of the job it was picked from.
    const parent = state.cards.get(reply.parent_job_id)?.reply;
    const prompt = parent?.meta?.prompt;
    const index = reply.meta?.index;
    const of = (parent?.tiles || []).length;
    const alt = prompt ? (index && of > 1 ? `Image ${index} of ${of}: ${prompt}` : prompt) : "";
    fillMessage(node, { ...reply, images: (reply.images || []).map((i) => ({ ...i, alt: i.alt || alt })) });
    const by = reply.meta?.picked_by_name;
    if (by) node.prepend(el("p", { class: "picked-by", text: `Picked by ${by}` }));
    scrollDown();
  }

  function upsertMessage(reply) {
    let node = state.cards.get(reply.ref)?.el;
    if (!node) {
      node = el("article", { class: "card message", "data-testid": "message", "data-ref": reply.ref });
      $("feed").append(node);
    }
    remember(reply.ref, node, reply);
    fillMessage(node, reply);
    scrollDown();
  }

  function fillMessage(node, reply) {
    fill(node,
      el("p", { class: "caption", text: reply.text || "" }),
      reply.notice ? el("p", { class: "notice", text: reply.notice }) : null,
      el("div", { class: "images" }),
      el("div", { class: "buttons" }),
    );
    fillImages(node.querySelector(".images"), reply);
    fillButtons(node.querySelector(".buttons"), reply.buttons || []);
  }

  const KIND = {
    refine: "Refinement", vary: "Variation", "vary-subtle": "Subtle variation", "vary-strong": "Strong variation",
    reroll: "Reroll", upscale: "Upscale", zoom: "Zoom out", pan: "Pan",
  };
  const OUTCOME = { done: "Done", failed: "Failed", filtered: "Filtered", cancelled: "Cancelled", running: "Rendering", queued: "Queued" };

  function fillHead(head, reply, outcome) {
    const kind = KIND[reply.meta?.kind];
    const index = reply.meta?.parent_index;
    const menu = cardMenu(reply);
    fill(head,
      el("span", { class: "owner", text: reply.owner ? `@${reply.owner}` : "", title: reply.meta?.owner_name || null }),
      kind ? el("span", { class: "kind", text: index ? `${kind} of image ${index}` : kind }) : null,
      el("span", { class: `state state-${outcome || "none"}`, "data-testid": "state", text: OUTCOME[outcome] || outcome || "" }),
      menu,
    );
  }

  function fillStatus(node, reply) {
    node.replaceChildren();
    if (reply.state === "queued") {
      const place = reply.position ? `#${reply.position} in line` : "in line";
      node.append(el("span", { class: "queued", text: `Waiting, ${place}` }));
    } else if (reply.state === "running") {
      const progress = el("progress", { max: "1", "data-testid": "progress" });
      if (typeof reply.progress === "number") progress.value = reply.progress;
      const pct = typeof reply.progress === "number" ? ` ${Math.round(reply.progress * 100)}%` : "";
      node.append(el("span", { text: `Rendering${pct}` }), progress);
    }
  }

  // -- images on cards: each image with its own actions; a click opens the lightbox ---------

  function stripIndex(label, index) {
    return label.replace(new RegExp(`\\s+${index}$`), "");
  }

  function buttonsFor(reply, index) {
    return (reply.buttons || []).filter((b) => {
      const m = INDEXED.exec(b.action);
      return m && Number(m[3]) === index;
    });
  }

  function fillTiles(node, reply) {
    node.replaceChildren();
    const tiles = reply.tiles || [];
    if (!tiles.length) {
      fillImages(node, reply); // a grid (older result) or nothing yet
      node.className = "tiles";
      return false;
    }
    node.className = `tiles n${Math.min(tiles.length, 10)}`;
    const items = tiles.map((t) => lightboxItem(t, reply, buttonsFor(reply, t.index)));
    tiles.forEach((tile, i) => {
      const img = el("img", {
        src: tile.url, alt: tile.alt || `Image ${tile.index}`, loading: "lazy", decoding: "async",
        width: tile.width || null, height: tile.height || null, "data-testid": "tile-image",
      });
      const actions = el("div", { class: "tile-actions", "data-testid": "tile-actions" });
      for (const b of buttonsFor(reply, tile.index)) {
        actions.append(actionButton(b, stripIndex(b.label, tile.index), `${b.label}`));
      }
      const open = el("button", { type: "button", class: "tile-open", "aria-label": `Open image ${tile.index}`, "data-testid": "tile-open" }, img);
      open.addEventListener("click", () => openLightbox(items, i));
      node.append(el("figure", { class: "tile", "data-index": tile.index, "data-testid": "tile" }, open, actions));
    });
    return true;
  }

  function fillImages(node, reply) {
    node.replaceChildren();
    const images = (reply.images || []).filter((i) => i.url);
    const items = images.map((image) => lightboxItem(image, reply,
      reply.job_id ? [] : (reply.buttons || [])));
    images.forEach((image, i) => {
      const img = el("img", {
        src: image.url,
        alt: image.alt || reply.meta?.prompt || "generated image",
        // 0 means "not known" (grids): let the browser size the picture itself.
        width: image.width > 0 ? image.width : null,
        height: image.height > 0 ? image.height : null,
        class: image.kind === "grid" ? "grid" : "full",
        "data-testid": image.kind === "grid" ? "grid-image" : "full-image",
      });
      const open = el("button", { type: "button", class: "tile-open", "aria-label": "Open the image" }, img);
      open.addEventListener("click", () => openLightbox(items, i));
      const link = el("a", {
        href: `${image.url}?download=1`, download: image.filename || "", class: "download",
        "data-testid": "download", text: image.kind === "grid" ? "Download grid" : "Download",
      });
      node.append(el("figure", { class: `figure ${image.kind}` }, open, el("figcaption", {}, link)));
    });
  }

  function actionButton(b, label, title) {
    return button(label, { class: `btn ${b.style || "secondary"}`, "data-action": b.action, title: title || null },
      async (event, node) => {
        node.disabled = true;
        try {
          await runAction(b.action);
        } finally {
          node.disabled = false;
        }
      });
  }

  function fillButtons(node, buttons) {
    node.replaceChildren();
    for (const b of buttons) node.append(actionButton(b, b.label));
  }

  // -- the card menu (Reroll, Info, Lineage, Delete) and Delete with an undo window ----------

  function cardMenu(reply) {
    const own = (reply.buttons || []).filter((b) => !INDEXED.test(b.action));
    if (reply.state === "queued" || (!own.length && !reply.job_id)) return null;
    const wrap = el("div", { class: "menu-wrap" });
    const list = el("div", { class: "menu", role: "menu", "data-testid": "card-menu", hidden: true });
    const toggle = button("⋯", { class: "icon-btn menu-btn", "aria-label": "More actions", "aria-haspopup": "menu", "aria-expanded": "false", "data-testid": "card-menu-button" },
      () => setMenu(list, toggle, list.hidden));
    for (const b of own) {
      list.append(button(b.label, { class: `menu-item ${b.style || ""}`, role: "menuitem", "data-action": b.action }, () => {
        setMenu(list, toggle, false);
        if (b.action.startsWith("delete:")) deleteWithUndo(b.action, reply.ref);
        else runAction(b.action);
      }));
    }
    if (reply.job_id) {
      list.append(button("Lineage", { class: "menu-item", role: "menuitem", "data-testid": "menu-lineage" }, () => {
        setMenu(list, toggle, false);
        openLineage(reply.job_id);
      }));
    }
    wrap.append(toggle, list);
    return wrap;
  }

  function setMenu(list, toggle, open) {
    for (const other of document.querySelectorAll(".menu:not([hidden])")) if (other !== list) other.hidden = true;
    list.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) list.querySelector("button")?.focus();
  }

  document.addEventListener("click", (event) => {
    if (!event.target.closest(".menu-wrap")) for (const m of document.querySelectorAll(".menu:not([hidden])")) m.hidden = true;
  });

  function deleteWithUndo(action, ref) {
    const card = state.cards.get(ref)?.el;
    if (card) card.hidden = true;
    const entry = { card };
    const undo = button("Undo", { class: "btn primary", "data-testid": "undo" }, () => {
      clearTimeout(entry.timer);
      state.pendingDeletes.delete(action);
      if (entry.card) entry.card.hidden = false;
      entry.notice.remove();
    });
    entry.notice = showNotice({ text: "Deleted.", extra: undo, ms: UNDO_MS, testid: "undo-notice" });
    entry.timer = setTimeout(() => {
      state.pendingDeletes.delete(action);
      entry.notice.remove();
      runAction(action).then((answer) => {
        if (answer.error && entry.card) entry.card.hidden = false;
      });
    }, UNDO_MS);
    state.pendingDeletes.set(action, entry);
  }

  // A page closed inside the undo window still deletes what it said it deleted.
  window.addEventListener("pagehide", () => {
    for (const [action, entry] of state.pendingDeletes) {
      clearTimeout(entry.timer);
      fetch("/api/action", {
        method: "POST", keepalive: true, credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: userName(), channel: state.channel, action, fields: {} }),
      });
    }
    state.pendingDeletes.clear();
  });

  // -- notices: say what happened, then go away ----------------------------------------------

  function showNotice(reply) {
    const box = $("notices");
    const item = el("div", {
      class: reply.error ? "notice-item error" : "notice-item",
      "data-testid": reply.testid || "notice",
      role: reply.error ? "alert" : null,
    });
    const close = button("×", { class: "close", "aria-label": "Dismiss" }, () => item.remove());
    item.append(close, el("p", { class: "notice-text", text: reply.text || "" }));
    if (reply.notice) item.append(el("p", { class: "notice", text: reply.notice }));
    if ((reply.images || []).length) {
      const images = el("div", { class: "images" });
      fillImages(images, reply);
      item.append(images);
    }
    const asks = (reply.buttons || []).length > 0;
    if (asks) {
      // A question (Run 3 jobs? Cancel): it stays until answered, then goes.
      const buttons = el("div", { class: "buttons" });
      fillButtons(buttons, reply.buttons);
      buttons.addEventListener("click", (event) => {
        if (event.target.closest("button")) setTimeout(() => item.remove(), 0);
      });
      item.append(buttons);
    }
    if (reply.extra) item.append(reply.extra);
    box.prepend(item);
    while (box.children.length > 4) box.lastElementChild.remove();
    if (asks) return item;
    // Long enough to read (longer for errors and long texts), paused while pointed at.
    const text = reply.text || "";
    const ms = reply.ms || Math.min(20000, (reply.error ? 9000 : 5000) + 40 * text.length);
    let timer = setTimeout(() => item.remove(), ms);
    item.addEventListener("mouseenter", () => clearTimeout(timer));
    item.addEventListener("mouseleave", () => { timer = setTimeout(() => item.remove(), 2500); });
    return item;
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
    if ($("lightbox").open) $("lightbox").close();
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

  // -- the lightbox: one image large, arrow keys, download, the image's own actions ----------

  function lightboxItem(image, reply, buttons) {
    const prompt = reply.meta?.prompt || reply.prompt || "";
    return {
      url: image.url, download_url: `${image.url}?download=1`, alt: image.alt || prompt,
      caption: [image.alt || prompt, reply.owner ? `@${reply.owner}` : ""].filter(Boolean).join(" · "),
      buttons: buttons || [], index: image.index, job_id: reply.job_id || reply.parent_job_id || null,
      channel: reply.channel || null,
    };
  }

  function openLightbox(items, at) {
    state.lightbox = { items, at };
    drawLightbox();
    const box = $("lightbox");
    if (!box.open) box.showModal();
  }

  function drawLightbox() {
    const { items, at } = state.lightbox;
    const item = items[at];
    if (!item) return;
    const img = $("lb-image");
    img.src = item.url;
    img.alt = item.alt || "";
    $("lb-caption").textContent = items.length > 1 ? `${at + 1} / ${items.length} · ${item.caption}` : item.caption;
    $("lb-prev").hidden = items.length < 2;
    $("lb-next").hidden = items.length < 2;
    const actions = $("lb-actions");
    actions.replaceChildren();
    for (const b of item.buttons) {
      const label = item.index ? stripIndex(b.label, item.index) : b.label;
      actions.append(button(label, { class: `btn ${b.style || "secondary"}`, "data-action": b.action }, () => {
        $("lightbox").close();
        runAction(b.action);
      }));
    }
    if (item.job_id && item.channel && item.channel !== state.channel) {
      actions.append(button(`Open #${item.channel}`, { class: "btn", "data-testid": "lightbox-goto" }, () => {
        closePanels();
        location.hash = item.channel;
      }));
    }
    if (item.job_id) {
      actions.append(button("Lineage", { class: "btn", "data-testid": "lightbox-lineage" }, () => {
        $("lightbox").close();
        openLineage(item.job_id);
      }));
    }
    actions.append(el("a", { class: "btn", href: item.download_url, download: "", "data-testid": "lightbox-download", text: "Download" }));
  }

  function stepLightbox(by) {
    const n = state.lightbox.items.length;
    if (n < 2) return;
    state.lightbox.at = (state.lightbox.at + by + n) % n;
    drawLightbox();
  }

  // -- uploads: pick, drop or paste an image to start an /imagine from it ---------------------

  function attachImage(file) {
    if (!file) return;
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      showNotice({ text: "That file is not a PNG, JPEG or WEBP image.", error: true });
      return;
    }
    if (file.size > state.maxUpload) {
      showNotice({ text: `That image is larger than ${Math.floor(state.maxUpload / 1048576)} MB.`, error: true });
      return;
    }
    if ($("chip-image").src.startsWith("blob:")) URL.revokeObjectURL($("chip-image").src);
    state.initImage = file;
    $("chip-image").src = URL.createObjectURL(file);
    $("chip-text").textContent = `Starts from ${file.name || "the pasted image"}: describe what to make of it.`;
    $("chip").hidden = false;
    $("line").focus();
  }

  function clearImage() {
    state.initImage = null;
    $("chip").hidden = true;
    if ($("chip-image").src.startsWith("blob:")) URL.revokeObjectURL($("chip-image").src);
    $("chip-image").removeAttribute("src");
    $("file").value = "";
  }

  function setUpUploads() {
    $("attach").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", () => attachImage($("file").files[0]));
    $("chip-remove").addEventListener("click", clearImage);
    $("line").addEventListener("paste", (event) => {
      const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (file) {
        event.preventDefault();
        attachImage(file);
      }
    });
    let depth = 0;
    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    window.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth += 1;
      $("drop").hidden = false;
    });
    window.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) $("drop").hidden = true;
    });
    window.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
    window.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      $("drop").hidden = true;
      attachImage([...event.dataTransfer.files].find((f) => f.type.startsWith("image/")) || event.dataTransfer.files[0]);
    });
  }

  // -- the gallery: this channel's images or mine, search, infinite scroll -------------------

  function openGallery() {
    const box = $("gallery");
    if (!box.open) box.showModal();
    resetGallery();
  }

  function resetGallery() {
    const g = state.gallery;
    g.token += 1;
    g.next = null;
    g.done = false;
    g.loading = false;
    g.items = [];
    $("gallery-grid").replaceChildren();
    $("gallery-status").textContent = "";
    for (const tab of document.querySelectorAll("#gallery .tab")) tab.setAttribute("aria-selected", String(tab.dataset.scope === g.scope));
    loadGallery();
  }

  async function loadGallery() {
    const g = state.gallery;
    if (g.loading || g.done) return;
    g.loading = true;
    const token = g.token;
    const params = new URLSearchParams({ q: g.query, limit: "24" });
    if (g.scope === "mine") {
      params.set("mine", "1");
      params.set("name", userName());
    } else params.set("channel", state.channel);
    if (g.next) params.set("before", g.next);
    let answer;
    try {
      answer = await (await fetch(`/api/gallery?${params}`)).json();
    } catch (err) {
      answer = { error: "The playground server is not reachable." };
    }
    if (token !== g.token) return; // the tab or the search changed meanwhile
    g.loading = false;
    if (answer.error) {
      $("gallery-status").textContent = answer.error;
      g.done = true;
      return;
    }
    const start = g.items.length;
    for (const item of answer.items) {
      g.items.push(lightboxItem(item, { meta: { prompt: item.prompt }, owner: item.owner, job_id: item.job_id, channel: item.channel }, []));
    }
    answer.items.forEach((item, i) => {
      const img = el("img", { src: item.url, alt: item.alt || item.prompt, loading: "lazy", decoding: "async" });
      const open = el("button", { type: "button", class: "g-item", "data-testid": "gallery-item", "data-job-id": item.job_id, title: `${item.prompt} · @${item.owner}` }, img);
      open.addEventListener("click", () => openLightbox(state.gallery.items, start + i));
      $("gallery-grid").append(open);
    });
    g.next = answer.next;
    g.done = !answer.next;
    if (!g.items.length) $("gallery-status").textContent = g.query ? `No image's prompt contains "${g.query}".` : "No images yet.";
    else $("gallery-status").textContent = g.done ? `${g.items.length} image${g.items.length === 1 ? "" : "s"}` : "";
    // Still room on screen: fetch the next page without waiting for a scroll.
    if (!g.done && isVisible($("gallery-more"))) loadGallery();
  }

  function isVisible(node) {
    const box = node.getBoundingClientRect();
    const panel = $("gallery").getBoundingClientRect();
    return box.top < panel.bottom + 200;
  }

  function setUpGallery() {
    $("gallery-open").addEventListener("click", openGallery);
    $("gallery-close").addEventListener("click", () => $("gallery").close());
    for (const tab of document.querySelectorAll("#gallery .tab")) {
      tab.addEventListener("click", () => {
        state.gallery.scope = tab.dataset.scope;
        resetGallery();
      });
    }
    let timer = null;
    $("gallery-search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        state.gallery.query = $("gallery-search").value.trim();
        resetGallery();
      }, 250);
    });
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadGallery();
    }, { root: $("gallery"), rootMargin: "200px" });
    observer.observe($("gallery-more"));
  }

  // -- lineage: a job's family tree, clickable ------------------------------------------------

  async function openLineage(jobId) {
    const box = $("lineage");
    const tree = $("lineage-tree");
    tree.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    if (!box.open) box.showModal();
    let answer;
    try {
      const response = await fetch(`/api/lineage?job=${encodeURIComponent(jobId)}`);
      answer = response.ok ? await response.json() : { error: "That job is no longer here." };
    } catch (err) {
      answer = { error: "The playground server is not reachable." };
    }
    if (answer.error) return tree.replaceChildren(el("p", { class: "muted", text: answer.error }));
    const children = new Map();
    for (const node of answer.nodes) {
      const key = node.parent_job_id || "";
      if (!children.has(key)) children.set(key, []);
      children.get(key).push(node);
    }
    const byId = new Map(answer.nodes.map((n) => [n.job_id, n]));
    const draw = (node) => {
      const kind = node.kind === "imagine" ? "Imagined" : KIND[node.kind] || node.kind;
      const of = node.parent_index ? ` of image ${node.parent_index}` : "";
      const thumb = node.images[0];
      const row = el("button", {
        type: "button", class: `ln-node${node.job_id === answer.focus ? " focus" : ""}`,
        "data-testid": "lineage-node", "data-job-id": node.job_id, "data-outcome": node.outcome,
      },
      thumb ? el("img", { src: thumb.url, alt: thumb.alt, loading: "lazy" }) : el("span", { class: "ln-empty", text: node.outcome === "deleted" ? "deleted" : OUTCOME[node.outcome] || "" }),
      el("span", { class: "ln-text" },
        el("span", { class: "ln-kind", text: `${kind}${of} · @${node.owner}` }),
        el("span", { class: "ln-prompt", text: node.prompt || "(deleted)" })));
      row.addEventListener("click", () => goToJob(node));
      const kids = (children.get(node.job_id) || []).map((child) => draw(child));
      return el("li", {}, row, kids.length ? el("ul", {}, ...kids) : null);
    };
    const roots = answer.nodes.filter((n) => !n.parent_job_id || !byId.has(n.parent_job_id));
    tree.replaceChildren(el("ul", { class: "ln-root" }, ...roots.map(draw)));
    if (answer.truncated) tree.append(el("p", { class: "muted", text: "Only the first part of a very large family is shown." }));
  }

  function goToJob(node) {
    const card = state.cards.get(node.job_id)?.el;
    if (card && node.channel === state.channel) {
      $("lineage").close();
      card.scrollIntoView({ block: "center", behavior: "smooth" });
      card.classList.add("flash");
      setTimeout(() => card.classList.remove("flash"), 1600);
      return;
    }
    if (node.images.length) {
      $("lineage").close();
      const items = node.images.map((img) => lightboxItem(img, { meta: { prompt: node.prompt }, owner: node.owner, job_id: node.job_id, channel: node.channel }, []));
      openLightbox(items, 0);
    }
  }

  function closePanels() {
    for (const id of ["lightbox", "gallery", "lineage"]) if ($(id).open) $(id).close();
  }

  // -- channels and the composer -------------------------------------------------------------

  function selectChannel(name) {
    state.channel = name;
    $("channel-title").textContent = `#${name}`;
    $("nav-toggle").textContent = "☰";
    $("nav-toggle").title = `#${name}: other channels`;
    for (const link of $("channels").querySelectorAll("a")) {
      link.classList.toggle("active", link.dataset.channel === name);
      if (link.dataset.channel === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    setNav(false);
    resetFeed();
    connect();
  }

  function setNav(open) {
    document.body.classList.toggle("nav-open", open);
    $("nav-toggle").setAttribute("aria-expanded", String(open));
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

  function rememberLine(text) {
    state.lines = [text, ...state.lines.filter((l) => l !== text)].slice(0, LINES_KEPT);
    state.lineAt = -1;
    try {
      localStorage.setItem("imagine-lines", JSON.stringify(state.lines));
    } catch (err) {
      /* private mode: recall works for this page only */
    }
  }

  function recall(event) {
    const line = $("line");
    if (event.key === "ArrowUp" && (line.selectionStart === 0 || state.lineAt >= 0 || !line.value)) {
      if (state.lineAt + 1 >= state.lines.length) return;
      if (state.lineAt < 0) state.draft = line.value;
      state.lineAt += 1;
    } else if (event.key === "ArrowDown" && state.lineAt >= 0) {
      state.lineAt -= 1;
    } else return;
    event.preventDefault();
    line.value = state.lineAt < 0 ? state.draft : state.lines[state.lineAt];
    line.setSelectionRange(line.value.length, line.value.length);
  }

  async function submitLine(event) {
    event.preventDefault();
    const text = $("line").value.trim();
    if (!text) return;
    $("notices").replaceChildren();
    state.stickToBottom = true; // your own new card is what you want to see
    $("send").disabled = true;
    rememberLine(text);
    try {
      const answer = await runCommand(text);
      // Keep the line when it was refused (a bad flag) so it can be fixed in place.
      if ((answer.replies || []).some((r) => r.job_id)) {
        $("line").value = "";
        clearImage();
      }
    } finally {
      $("send").disabled = false;
      $("line").focus();
    }
  }

  // -- start-up ------------------------------------------------------------------------------

  async function start() {
    try {
      state.lines = JSON.parse(localStorage.getItem("imagine-lines") || "[]").filter((l) => typeof l === "string");
    } catch (err) {
      state.lines = [];
    }
    $("feed").addEventListener("scroll", trackScroll, { passive: true });
    const config = await (await fetch("/api/config")).json();
    state.channels = config.channels;
    state.linked = config.linked;
    state.maxUpload = config.max_upload_bytes || state.maxUpload;
    if (!state.linked) {
      // A name is suggested, so the first command just works; it is yours to change.
      let saved = localStorage.getItem("imagine-name");
      if (!saved) {
        saved = guestName();
        localStorage.setItem("imagine-name", saved);
      }
      $("name").value = saved;
    }
    showIdentity();
    renderHint(config.flags);
    for (const name of state.channels) {
      const link = el("a", { href: `#${name}`, "data-channel": name, text: `#${name}` });
      link.addEventListener("click", () => setNav(false));
      $("channels").append(link);
    }
    window.addEventListener("hashchange", () => {
      const wanted = decodeURIComponent(location.hash.slice(1));
      if (state.channels.includes(wanted) && wanted !== state.channel) selectChannel(wanted);
    });
    const wanted = decodeURIComponent(location.hash.slice(1));
    selectChannel(state.channels.includes(wanted) ? wanted : state.channels[0]);
    refreshQuota();

    $("nav-toggle").addEventListener("click", () => setNav(!document.body.classList.contains("nav-open")));
    $("name").addEventListener("change", () => {
      if (!userName()) $("name").value = guestName();
      localStorage.setItem("imagine-name", userName());
      refreshQuota();
      connect(); // private replies follow the name
    });
    $("line").addEventListener("keydown", recall);
    $("composer").addEventListener("submit", submitLine);
    $("dialog-form").addEventListener("submit", submitForm);
    $("dialog-cancel").addEventListener("click", () => {
      state.pendingForm = null;
      $("dialog").close();
    });
    $("lb-close").addEventListener("click", () => $("lightbox").close());
    $("lb-prev").addEventListener("click", () => stepLightbox(-1));
    $("lb-next").addEventListener("click", () => stepLightbox(1));
    $("lightbox").addEventListener("keydown", (event) => {
      if (event.key === "ArrowLeft") stepLightbox(-1);
      else if (event.key === "ArrowRight") stepLightbox(1);
    });
    // A click on the dark surround closes a dialog, as people expect.
    for (const id of ["lightbox", "gallery", "lineage"]) {
      $(id).addEventListener("click", (event) => { if (event.target === $(id)) $(id).close(); });
    }
    $("lineage-close").addEventListener("click", () => $("lineage").close());
    setUpUploads();
    setUpGallery();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
