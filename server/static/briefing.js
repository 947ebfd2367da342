// What a reader does on the briefing pages, sent as events to POST /v1/events (the same API an
// app uses): an impression per item shown, a click on an item's links, a read with its dwell time
// when the reader comes back from the article, and thumbs up or down. Plain JavaScript and a
// same-origin file: the pages load nothing from elsewhere.
//
// Every event has its own id, so a batch sent twice is stored once (the API dedupes per reader and
// event id). Events wait in localStorage until the API has them: a failed send (offline, a server
// error, a 429) is retried with backoff, when the browser is back online, and on the next page load.
// Times are the service's clock (the page says what it was when rendered), not the browser's, so a
// demo running on a set clock gets events in its own time frame.
(() => {
  "use strict";
  const list = document.querySelector("[data-events]");
  if (!list || !window.fetch) return;

  const reader = list.dataset.reader;
  const renderedAt = Date.parse(list.dataset.now);
  const loaded = performance.now();
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const QUEUE = `briefing.events.${reader}`; // per reader: never send one reader's events as another's
  const READING = `briefing.reading.${reader}`;
  const PAGE = newId(); // this page load: a read left open by another load is finished on this one
  const MAX_QUEUE = 500; // events kept while offline; the oldest go first
  const BATCH = 50; // per request: a keepalive request body must stay under 64 KiB
  const MIN_READ_S = 1; // a quicker return is a bounce, not a read (the click is still recorded)
  const MAX_DWELL_S = 6 * 3600; // the API's bound
  const RETRY_LATER = new Set([401, 403]); // sign-in or token trouble: retried on the next page load
  const memory = new Map(); // where localStorage is unavailable, the queue lives as long as the page

  function newId() {
    if (window.crypto?.randomUUID) return crypto.randomUUID(); // secure contexts only
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function serviceTime() {
    return new Date(renderedAt + (performance.now() - loaded)).toISOString();
  }

  function read(key, empty) {
    try {
      const text = localStorage.getItem(key);
      return text === null ? (memory.get(key) ?? empty) : JSON.parse(text);
    } catch {
      return memory.get(key) ?? empty;
    }
  }

  function write(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, JSON.stringify(value));
      memory.delete(key);
    } catch {
      if (value === null) memory.delete(key);
      else memory.set(key, value);
    }
  }

  function record(type, articleId, extra = {}) {
    const event = { event_id: newId(), type, article_id: articleId, at: serviceTime(), ...extra };
    enqueue([event]);
    return event;
  }

  function enqueue(events) {
    write(QUEUE, [...read(QUEUE, []), ...events].slice(-MAX_QUEUE));
    flush();
  }

  function forget(sent) {
    const ids = new Set(sent.map((e) => e.event_id));
    write(QUEUE, read(QUEUE, []).filter((e) => !ids.has(e.event_id)));
  }

  let sending = false;
  let backoff = 1000;
  let timer = 0;

  // The request starts before the first await, so a click that leaves the page still sends it
  // (keepalive); its answer is then never read and the events go again on return: stored once.
  async function flush() {
    const batch = read(QUEUE, []).slice(0, BATCH);
    if (sending || batch.length === 0) return;
    sending = true;
    let status = 0;
    try {
      const response = await fetch("/v1/events", {
        method: "POST",
        keepalive: true,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ events: batch }),
      });
      status = response.status;
    } catch {
      status = 0; // offline, or the service is unreachable
    } finally {
      sending = false;
    }
    settle(batch, status);
  }

  function settle(batch, status) {
    const retry = status === 0 || status === 408 || status === 429 || status >= 500;
    if (RETRY_LATER.has(status)) return;
    if (!retry) {
      if (status !== 200) console.warn(`briefing events refused (HTTP ${status}); dropped`, batch);
      forget(batch); // stored, or refused as invalid: sending them again would not help
      backoff = 1000;
      flush();
      return;
    }
    clearTimeout(timer);
    if (navigator.onLine !== false) timer = setTimeout(flush, backoff); // offline: the online event
    backoff = Math.min(backoff * 2, 60_000);
  }

  // Impressions: one per item, once the page is actually seen. The ids come from the page (the
  // reader, the briefing and the article), so a reload of the same briefing counts nothing twice.
  let impressed = false;
  function impressions() {
    if (impressed || document.visibilityState !== "visible") return;
    impressed = true;
    const shownAt = list.dataset.shownAt;
    const items = list.querySelectorAll("[data-impression][data-article]");
    const events = Array.from(items, (item) => ({
      event_id: item.dataset.impression,
      type: "impression",
      article_id: item.dataset.article,
      at: shownAt,
    }));
    if (events.length) enqueue(events);
  }

  // Reads: a click opens the article; the time until the reader is back on this page (or on the
  // next load of it) is the dwell. Only after the page was left: a click into a background tab
  // that the reader never looked at is a click, not a read.
  function startReading(articleId, at) {
    finishReading();
    write(READING, { article_id: articleId, at, started: Date.now(), page: PAGE, left: false });
  }

  function left() {
    const open = read(READING, null);
    if (open && !open.left) write(READING, { ...open, left: true });
  }

  function finishReading() {
    const open = read(READING, null);
    if (!open) return;
    write(READING, null);
    if (!open.left && open.page === PAGE) return;
    const dwell = Math.min((Date.now() - open.started) / 1000, MAX_DWELL_S);
    if (dwell < MIN_READ_S) return;
    enqueue([{ event_id: newId(), type: "read", article_id: open.article_id, at: open.at,
      dwell_s: Math.round(dwell * 10) / 10 }]);
  }

  function onClick(event) {
    const link = event.target.closest("a[href]");
    const item = link?.closest("[data-article]");
    if (!item || !list.contains(item)) return;
    const click = record("click", item.dataset.article);
    startReading(item.dataset.article, click.at);
  }

  function onThumb(event) {
    const button = event.target.closest("button[data-thumb]");
    const item = button?.closest("[data-article]");
    if (!item || button.getAttribute("aria-pressed") === "true") return;
    for (const other of item.querySelectorAll("button[data-thumb]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    record(button.dataset.thumb, item.dataset.article);
  }

  list.addEventListener("click", (event) => { onClick(event); onThumb(event); });
  list.addEventListener("auxclick", (event) => { if (event.button === 1) onClick(event); });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") {
      left();
      flush();
    } else {
      finishReading();
      impressions();
    }
  });
  window.addEventListener("pagehide", () => { left(); flush(); });
  window.addEventListener("pageshow", (event) => { if (event.persisted) finishReading(); });
  window.addEventListener("online", () => { backoff = 1000; flush(); });

  finishReading();
  impressions();
  flush();
})();
