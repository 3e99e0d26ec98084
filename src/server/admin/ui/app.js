// ocfd console: a single page over the admin API (/v1, docs/admin-api.yaml), no framework and
// no build step. Every text from the API goes into the page as text (textContent, append of
// strings), never as HTML.
'use strict';

const PAGE = 50; // children per page of a cost centre
const EVENT_ROWS = 500; // events kept in the feed's DOM
const BACKOFF_MS = [1000, 2000, 5000, 10000]; // waits before reconnecting a stream
const TOKEN_KEY = 'ocfd.token';
const UNITS = ['octets', 'seconds', 'events', 'money'];
const PERIODS = ['month', 'day', 'total'];
const UNIT_NAMES = { octets: 'data', seconds: 'time', events: 'events', money: 'money' };
const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

const app = {
  token: null,
  me: null, // GET /v1/whoami: name, role, scope
  view: null, // AbortController of the view on screen: aborting it stops its requests and streams
  page: { path: null, offset: 0 }, // the cost centre being paged through
  statementMonth: null,
};

// ---- small helpers ----

const $ = (sel, root = document) => root.querySelector(sel);

// An element with attributes and children; strings become text nodes, so API data stays text.
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

const clone = (id) => document.getElementById(id).content.cloneNode(true);
const encPath = (path) => path.split('/').map(encodeURIComponent).join('/');
const hashFor = (kind, path) => `#/${kind}/${encPath(path)}`;
const within = (scope, path) => !scope || path === scope || path.startsWith(scope + '/');
const sleep = (ms, signal) =>
  new Promise((done) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); done(); }, { once: true });
  });

// Non-blank lines of a textarea with their line numbers, for messages that point at a line.
const numberedLines = (text) =>
  text.split('\n').map((s, i) => [s.trim(), i + 1]).filter(([s]) => s);

// ---- formatting: words for people, raw numbers stay in data attributes ----

function fmtOctets(v) {
  let n = Number(v);
  let i = 0;
  while (n >= 1024 && i < BINARY.length - 1) { n /= 1024; i++; }
  return `${i && n < 10 ? +n.toFixed(1) : Math.round(n)} ${BINARY[i]}`;
}

function fmtSeconds(v) {
  const s = Number(v);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.floor(s % 60);
  return [h && `${h} h`, m && `${m} min`, (r || !(h || m)) && `${r} s`].filter(Boolean).join(' ');
}

const fmtMoney = (v) => Number(v).toFixed(2);

function fmtAmount(unit, v) {
  if (unit === 'octets') return fmtOctets(v);
  if (unit === 'seconds') return fmtSeconds(v);
  if (unit === 'money') return fmtMoney(v);
  return `${Number(v).toLocaleString('en')} ${unit}`;
}

// An amount the API takes back unchanged: "10 GiB" when that is exact, else the raw number.
function exactAmount(unit, v) {
  if (unit !== 'octets') return String(v);
  let n = Number(v), i = 0;
  while (n >= 1024 && n % 1024 === 0 && i < 4) { n /= 1024; i++; }
  return i ? `${n} ${BINARY[i]}` : String(v);
}

const fmtTime = (unix) => new Date(unix * 1000).toLocaleString();
const fmtDay = (unix) => new Date(unix * 1000).toISOString().slice(0, 10);

// ---- messages ----

function showError(words) {
  const box = $('#error');
  box.textContent = words;
  box.hidden = false;
}

function clearError() {
  $('#error').hidden = true;
  $('#error').textContent = '';
}

let noticeTimer = 0;
function notice(words) {
  const box = $('#notice');
  box.textContent = words;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 5000);
}

// Shows a failure in words; a token the server no longer takes goes back to the sign-in form.
function fail(e) {
  if (e.name === 'AbortError') return; // the view changed: nobody waits for this answer
  showError(e.message || String(e));
  if (e.status === 401 && app.me) signOut();
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, words) {
    super(words);
    this.status = status;
  }
}

const authHeaders = () => ({ Authorization: `Bearer ${app.token}` });

// The API's own words for a failed answer ({"error": "..."}), else its status line.
async function errorOf(res) {
  let words = '';
  try { words = (await res.json()).error; } catch { /* not JSON: the status says it */ }
  return new ApiError(res.status, words || `${res.status} ${res.statusText}`.trim());
}

// Calls /v1 with the token: the answer's JSON (null when it has none), or an ApiError.
async function api(method, url, body, signal) {
  const headers = authHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `The server cannot be reached: ${e.message}`);
  }
  if (!res.ok) throw await errorOf(res);
  return res.status === 204 ? null : res.json();
}

// ---- server-sent events over fetch (EventSource cannot send the Authorization header) ----

// One SSE message from its lines; comments (":...") are skipped; none if it has no data.
function parseFrame(frame) {
  let event = 'message', id = null;
  const data = [];
  for (const line of frame.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  return data.length ? { event, id, data: data.join('\n') } : null;
}

// Reads a text/event-stream body until it ends: messages are separated by a blank line.
async function readMessages(body, onMessage) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // A CR at the end of one chunk meets its LF in the next: the whole buffer is normalised.
    buf = (buf + decoder.decode(value, { stream: true })).replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const m = parseFrame(buf.slice(0, end));
      buf = buf.slice(end + 2);
      if (m) onMessage(m);
    }
  }
}

function liveState(state) {
  const box = $('#live-state');
  box.hidden = !state;
  box.dataset.state = state || 'off';
  box.textContent = `live: ${state || 'off'}`;
}

// Follows a stream while the view lasts, reconnecting after 1, 2, 5, 10 s when it ends or
// fails. `url` is a function so a reconnect can resume (events after the last id seen).
async function follow(url, signal, onMessage) {
  let attempt = 0;
  while (!signal.aborted) {
    try {
      const res = await fetch(url(), { headers: authHeaders(), signal });
      if (!res.ok) throw await errorOf(res);
      liveState('connected');
      await readMessages(res.body, (m) => { attempt = 0; onMessage(m); });
    } catch (e) {
      if (signal.aborted) return;
      // The request itself is refused (bad token, scope, path): asking again will not help.
      if (e.status >= 400 && e.status < 500) { liveState('stopped'); fail(e); return; }
    }
    if (signal.aborted) return;
    liveState('reconnecting');
    await sleep(BACKOFF_MS[Math.min(attempt++, BACKOFF_MS.length - 1)], signal);
  }
}

// Calls fn with the latest value it was given, at most once per animation frame: a burst of
// live messages costs one render.
function perFrame(fn) {
  let latest, queued = false;
  return (v) => {
    latest = v;
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(latest); });
  };
}

// ---- bars ----

const barKey = (l) => `${l.unit}/${l.period}/${l.class || ''}`;

// One limit as a bar: used and reserved segments, the figures in words, and the raw figures
// in data attributes. Skips all DOM writes when the figures did not change.
function updateBar(b, l) {
  const raw = [String(l.used), String(l.reserved), String(l.limit)];
  const d = b.dataset;
  if (d.used === raw[0] && d.reserved === raw[1] && d.limit === raw[2]) return;
  Object.assign(d, { unit: l.unit, period: l.period, class: l.class || '', used: raw[0], reserved: raw[1], limit: raw[2] });
  const [used, reserved, limit] = raw.map(Number);
  const share = (x) => (limit > 0 ? Math.min(100, (x * 100) / limit) : 100);
  const pct = limit > 0 ? (used * 100) / limit : 100; // no allowance at all counts as full
  const usedWidth = used > 0 ? share(used) : 0;
  b.querySelector('.seg-used').style.width = `${usedWidth}%`;
  b.querySelector('.seg-reserved').style.width = `${reserved > 0 ? Math.min(100 - usedWidth, share(reserved)) : 0}%`;
  b.classList.toggle('warn', pct >= 80 && pct < 100);
  b.classList.toggle('full', pct >= 100);
  const f = (v) => fmtAmount(l.unit, v);
  b.querySelector('.bar-text').textContent =
    `${f(l.used)} used, ${f(l.reserved)} reserved of ${f(l.limit)} (${Math.floor(pct)} %)`;
}

function newBar(l) {
  const label = `${UNIT_NAMES[l.unit] || l.unit} · ${l.period}${l.class ? ` · ${l.class}` : ''}`;
  const b = el('div', { class: 'bar', 'data-key': barKey(l), title: l.period_end ? `until ${new Date(l.period_end).toLocaleString()}` : 'never resets' },
    el('div', { class: 'bar-label' }, label),
    el('div', { class: 'track' }, el('div', { class: 'seg-used' }), el('div', { class: 'seg-reserved' })),
    el('div', { class: 'bar-text' }));
  updateBar(b, l);
  return b;
}

// Brings a list of bars up to date in place, matching bars by unit, period and class.
function renderBars(box, limits) {
  const old = new Map([...box.children].map((b) => [b.dataset.key, b]));
  limits.forEach((l, i) => {
    let b = old.get(barKey(l));
    old.delete(barKey(l));
    if (b) updateBar(b, l);
    else b = newBar(l);
    if (box.children[i] !== b) box.insertBefore(b, box.children[i] || null);
  });
  old.forEach((b) => b.remove());
}

// ---- sign in and out ----

async function signIn(token) {
  app.token = token;
  try {
    app.me = await api('GET', '/v1/whoami');
  } catch (e) {
    app.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('#signin-form').hidden = false;
    fail(e);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  clearError();
  $('#token').value = '';
  $('#signin-form').hidden = true;
  document.body.dataset.role = app.me.role;
  const who = $('#whoami');
  who.textContent = `${app.me.name} (${app.me.role}, ${app.me.scope || 'all tenants'})`;
  for (const id of ['whoami', 'signout', 'menu']) $(`#${id}`).hidden = false;
  route();
}

function signOut() {
  if (app.view) app.view.abort();
  app.token = null;
  app.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const id of ['whoami', 'signout', 'menu']) $(`#${id}`).hidden = true;
  liveState(null);
  $('#view').replaceChildren();
  $('#signin-form').hidden = false;
  $('#token').focus();
}

// ---- routing ----

// #/ home, #/node/<path>, #/device/<path>, #/events[/<path>], #/statement/<tenant>.
function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  return { kind: parts[0] || '', path: parts.slice(1).map(decodeURIComponent).join('/') };
}

async function route() {
  if (!app.me) return;
  if (app.view) app.view.abort();
  const ctl = (app.view = new AbortController());
  clearError();
  liveState(null);
  const root = $('#view');
  root.replaceChildren();
  try {
    const { kind, path } = parseHash();
    if ((kind === 'node' || kind === 'device') && path) await showNode(root, path, ctl.signal);
    else if (kind === 'events') showEvents(root, path, ctl.signal);
    else if (kind === 'statement' && path) await showStatement(root, path, ctl.signal);
    else await showHome(root, ctl.signal);
  } catch (e) {
    fail(e);
  }
}

// Hides what the token's role may not do (the server refuses it anyway).
function applyRole(root) {
  if (app.me.role !== 'viewer') return;
  root.querySelectorAll('.write').forEach((e) => { e.hidden = true; });
}

// Runs a change from a button or form; says so and shows the view afresh, or says why not.
async function act(button, done, change) {
  button.disabled = true;
  clearError();
  try {
    await change();
    notice(done);
    route();
  } catch (e) {
    fail(e);
  } finally {
    button.disabled = false;
  }
}

function onSubmit(form, done, change) {
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    act(form.querySelector('button[type=submit]'), done, change);
  });
}

// Links up the tree; nodes above a scoped token's scope are out of its reach, so plain text.
function breadcrumbs(nav, path, linkLast) {
  const names = path.split('/');
  if (!app.me.scope) nav.append(el('a', { href: '#/' }, 'Tenants'));
  names.forEach((name, i) => {
    const p = names.slice(0, i + 1).join('/');
    const last = i === names.length - 1;
    if (i || !app.me.scope) nav.append(' / ');
    nav.append((!last || linkLast) && within(app.me.scope, p)
      ? el('a', { href: hashFor('node', p) }, name)
      : el('span', { 'aria-current': last ? 'page' : null }, name));
  });
}

// ---- home: the tenants (operators), or the token's scope ----

async function showHome(root, signal) {
  if (app.me.scope) {
    location.replace(hashFor('node', app.me.scope));
    return;
  }
  root.append(clone('tpl-tenants'));
  const list = $('.tenant-list', root);
  const tenants = await api('GET', '/v1/tenants', undefined, signal);
  for (const t of tenants) {
    list.append(el('li', { 'data-path': t.name },
      el('a', { href: hashFor('node', t.name), class: 'row-link' }, t.name),
      el('div', { class: 'muted' }, `${t.nodes.toLocaleString('en')} nodes · ${t.time_zone}`),
      el('a', { href: hashFor('statement', t.name) }, 'Statement')));
  }
}

// ---- a node: a tenant, a cost centre or a device ----

function subscriberOf(node) {
  const ids = Object.fromEntries(node.subscriptions.map((s) => [s.type, s.id]));
  if (ids.e164) return ids.e164;
  if (ids.imsi) return `imsi:${ids.imsi}`;
  if (ids.nai) return `nai:${ids.nai}`;
  if (ids.sip_uri) return ids.sip_uri;
  return ids.private ? `private:${ids.private}` : null;
}

function thresholdText(th) {
  return th.percent != null
    ? [`${th.percent}%`, th.unit, th.period].filter(Boolean).join(' ')
    : [th.unit, th.period, exactAmount(th.unit, th.amount)].filter(Boolean).join(' ');
}

function atLimitText(a) {
  if (!a) return "the tenant's policy";
  return [a.action, a.redirect_address, ...(a.filter_ids || []), ...(a.restriction_rules || [])].filter(Boolean).join(' ');
}

async function showNode(root, path, signal) {
  if (app.page.path !== path) app.page = { path, offset: 0 };
  const query = `?offset=${app.page.offset}&limit=${PAGE}`;
  const node = await api('GET', `/v1/nodes/${encPath(path)}${query}`, undefined, signal);
  const device = node.subscriptions.length > 0;
  const tenantRoot = !path.includes('/');
  // The hash says what the node is (a child's link cannot know before it is read).
  const canonical = hashFor(device ? 'device' : 'node', path);
  if (location.hash !== canonical) history.replaceState(null, '', canonical);

  root.append(clone('tpl-node'));
  breadcrumbs($('#breadcrumbs', root), path, false);
  $('.node-title', root).textContent = node.name;
  $('.node-facts', root).textContent = [
    device ? 'device' : tenantRoot ? 'tenant' : 'cost centre',
    node.blocked && 'BLOCKED',
    ...node.subscriptions.map((s) => `${s.type} ${s.id}`),
    node.thresholds.length && `thresholds ${node.thresholds.map(thresholdText).join(', ')}`,
    `at the limit: ${atLimitText(node.at_limit)}`,
  ].filter(Boolean).join(' · ');
  renderBars($('#own-bars', root), node.limits);
  root.querySelectorAll(device ? '.children, .cc-only' : '.device-only').forEach((e) => { e.hidden = true; });
  $('.policy', root).hidden = !tenantRoot || !within(app.me.scope, path);

  fillEditForms(root, node, path);
  const links = $('.links', root);
  links.append(el('a', { href: hashFor('events', path) }, 'Events under this node'));
  if (tenantRoot) links.append(' · ', el('a', { href: hashFor('statement', path) }, 'Statement'));
  applyRole(root);

  if (device) showDevice(root, node, path, signal);
  else {
    wirePaging(root, node.children_total);
    onSubmit($('#move-form', root), 'Allowance moved.', () => api('POST', '/v1/moves', moveBody(root)));
    applyUsage(root, await api('GET', `/v1/usage/${encPath(path)}${query}`, undefined, signal));
  }
  const paint = perFrame((u) => { if (!signal.aborted) applyUsage(root, u); });
  follow(() => `/v1/live/${encPath(path)}${query}`, signal, (m) => {
    if (m.event === 'usage') paint(JSON.parse(m.data));
    else if (m.event === 'error') showError(JSON.parse(m.data).error); // then the stream ends
  });
}

// A usage answer (GET or live) onto the page: own bars, then one row per child on this page,
// each row kept by path so only changed figures are written.
function applyUsage(root, u) {
  renderBars($('#own-bars', root), u.node.limits);
  const rows = $('#rows', root);
  const old = new Map([...rows.children].map((r) => [r.dataset.path, r]));
  u.children.forEach((c, i) => {
    let row = old.get(c.path);
    old.delete(c.path);
    if (!row) {
      row = el('div', { class: 'node-row', 'data-path': c.path },
        el('a', { href: hashFor('node', c.path), class: 'row-link' }, c.path.slice(c.path.lastIndexOf('/') + 1)),
        el('div', { class: 'bars' }));
    }
    if (rows.children[i] !== row) rows.insertBefore(row, rows.children[i] || null);
    renderBars($('.bars', row), c.limits);
  });
  old.forEach((r) => r.remove());
  const total = u.children_total != null ? u.children_total : u.children.length;
  const from = app.page.offset;
  $('#page-info', root).textContent = u.children.length
    ? `${from + 1}–${from + u.children.length} of ${total}` : `0 of ${total}`;
  $('#next-page', root).disabled = from + PAGE >= total;
  fillMoveChoices(root, u);
}

function wirePaging(root, total) {
  $('#prev-page', root).disabled = app.page.offset === 0;
  $('#next-page', root).disabled = app.page.offset + PAGE >= (total || 0);
  $('#prev-page', root).addEventListener('click', () => { app.page.offset = Math.max(0, app.page.offset - PAGE); route(); });
  $('#next-page', root).addEventListener('click', () => { app.page.offset += PAGE; route(); });
}

// The move form offers this node and its children on this page; rebuilt only when they change.
function fillMoveChoices(root, u) {
  const paths = [u.node.path, ...u.children.map((c) => c.path)];
  const from = $('#move-from', root), to = $('#move-to', root);
  if (from.dataset.paths === paths.join('\n')) return;
  from.dataset.paths = paths.join('\n');
  for (const [select, fallback] of [[from, 0], [to, 1]]) {
    const keep = select.value;
    select.replaceChildren(...paths.map((p, i) => el('option', { value: p }, i ? p.slice(p.lastIndexOf('/') + 1) : `${p} (this node)`)));
    select.value = paths.includes(keep) ? keep : paths[Math.min(fallback, paths.length - 1)];
  }
}

function moveBody(root) {
  const body = {
    from: $('#move-from', root).value,
    to: $('#move-to', root).value,
    unit: $('#move-unit', root).value,
    period: $('#move-period', root).value,
    amount: $('#move-amount', root).value.trim(),
  };
  const cls = $('#move-class', root).value.trim();
  if (cls) body.class = cls;
  return body;
}

// ---- editing a node: limits, thresholds, policy at the limit, rules, tenant policy ----

// "octets month 10 GiB class=video" per line; the period may be left out (month).
function parseLimits(text) {
  return numberedLines(text).map(([line, n]) => {
    const body = {};
    const cls = line.match(/\s+class=(\S+)$/);
    if (cls) { body.class = cls[1]; line = line.slice(0, cls.index); }
    const t = line.split(/\s+/);
    body.unit = t.shift();
    if (!UNITS.includes(body.unit)) throw new Error(`Limits, line ${n}: '${body.unit}' is not a unit (${UNITS.join(', ')}).`);
    body.period = PERIODS.includes(t[0]) ? t.shift() : 'month';
    if (!t.length) throw new Error(`Limits, line ${n}: an amount is needed, e.g. 10 GiB.`);
    body.amount = t.join(' ');
    return body;
  });
}

// "80%", "80% octets month", or "octets month 3 GiB" per line.
function parseThresholds(text) {
  return numberedLines(text).map(([line, n]) => {
    const t = line.replace(/(\d)\s+%/, '$1%').split(/\s+/);
    const th = {};
    const pct = t[0].match(/^(\d+)%$/);
    if (pct) { th.percent = Number(pct[1]); t.shift(); }
    if (UNITS.includes(t[0])) th.unit = t.shift();
    if (PERIODS.includes(t[0])) th.period = t.shift();
    if (!pct) {
      if (!th.unit || !t.length) throw new Error(`Thresholds, line ${n}: write 80% or a unit and an amount, e.g. octets month 3 GiB.`);
      th.amount = t.join(' ');
    } else if (t.length) {
      throw new Error(`Thresholds, line ${n}: '${t.join(' ')}' is not understood.`);
    }
    return th;
  });
}

function atLimitBody(root) {
  const lines = (id) => numberedLines($(id, root).value).map(([s]) => s);
  const body = { action: $('#at-limit-action', root).value };
  const address = $('#at-limit-address', root).value.trim();
  const type = $('#at-limit-address-type', root).value;
  if (address) body.redirect_address = address;
  if (type) body.redirect_address_type = type;
  body.filter_ids = lines('#at-limit-filters');
  body.restriction_rules = lines('#at-limit-restrictions');
  return body;
}

function parseJson(what, text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not JSON: ${e.message}`);
  }
}

function fillEditForms(root, node, path) {
  const url = (resource) => `/v1/${resource}/${encPath(path)}`;
  $('#limits-text', root).value = node.limits
    .map((l) => `${l.unit} ${l.period} ${exactAmount(l.unit, l.limit)}${l.class ? ` class=${l.class}` : ''}`).join('\n');
  onSubmit($('#limits-form', root), 'Limits saved.',
    () => api('PUT', url('limits'), { limits: parseLimits($('#limits-text', root).value) }));

  $('#thresholds-text', root).value = node.thresholds.map(thresholdText).join('\n');
  onSubmit($('#thresholds-form', root), 'Thresholds saved.',
    () => api('PUT', url('thresholds'), { thresholds: parseThresholds($('#thresholds-text', root).value) }));

  const a = node.at_limit || {};
  $('#at-limit-action', root).value = a.action || '';
  $('#at-limit-address', root).value = a.redirect_address || '';
  $('#at-limit-address-type', root).value = a.redirect_address_type || '';
  $('#at-limit-filters', root).value = (a.filter_ids || []).join('\n');
  $('#at-limit-restrictions', root).value = (a.restriction_rules || []).join('\n');
  onSubmit($('#at-limit-form', root), 'Policy at the limit saved.', () => {
    const body = atLimitBody(root);
    return body.action ? api('PUT', url('at-limit'), body) : api('DELETE', url('at-limit'));
  });

  // Rules and the tenant's policy are read when their section is opened, not on every page.
  whenOpened($('.rules', root), async () => {
    const v = await api('GET', url('rules'), undefined, app.view.signal);
    $('#rules-text', root).value = JSON.stringify({ rules: v.rules }, null, 2);
    $('#rules-inherited', root).textContent = v.inherited.length ? JSON.stringify(v.inherited, null, 2) : 'none';
  });
  onSubmit($('#rules-form', root), 'Rules saved.', () => {
    const v = parseJson('The rules', $('#rules-text', root).value);
    return api('PUT', url('rules'), Array.isArray(v) ? { rules: v } : v);
  });

  whenOpened($('.policy', root), async () => {
    const p = await api('GET', url('policy'), undefined, app.view.signal);
    $('#policy-current', root).textContent = JSON.stringify(p, null, 2);
  });
  onSubmit($('#policy-form', root), 'Policy changed.',
    () => api('PUT', url('policy'), parseJson('The change', $('#policy-patch', root).value)));
}

function whenOpened(details, load) {
  details.addEventListener('toggle', () => {
    if (details.open && !details.dataset.loaded) {
      details.dataset.loaded = 'yes';
      load().catch((e) => { delete details.dataset.loaded; fail(e); });
    }
  });
}

// ---- a device: block, sessions, decisions, events ----

function showDevice(root, node, path, signal) {
  $('#blocked-state', root).textContent = node.blocked ? 'blocked' : 'not blocked';
  // A block from a cost centre above is lifted there, not here.
  if (node.blocked_by && node.blocked_by !== path) {
    $('#blocked-by', root).textContent = `by ${node.blocked_by}: unblock it there`;
  }
  const url = `/v1/blocked/${encPath(path)}`;
  $('#block', root).addEventListener('click', (ev) => act(ev.currentTarget, 'Blocked.', () => api('PUT', url)));
  $('#unblock', root).addEventListener('click', (ev) => act(ev.currentTarget, 'Unblocked.', () => api('DELETE', url)));
  const load = () => loadDeviceLists(root, node, path, signal);
  $('.refresh', root).addEventListener('click', load);
  load();
}

// Fills a list from a request; a failure says why in the list itself and in #error.
async function fillList(list, request, item) {
  try {
    const items = await request;
    list.replaceChildren(...items.map(item));
  } catch (e) {
    list.replaceChildren(el('li', { class: 'muted' }, 'Not available.'));
    fail(e);
  }
}

function loadDeviceLists(root, node, path, signal) {
  fillList($('#sessions', root), api('GET', `/v1/sessions/${encPath(path)}`, undefined, signal), sessionItem);
  const sub = subscriberOf(node);
  if (sub) {
    fillList($('#decisions', root),
      api('GET', `/v1/explain/${encodeURIComponent(sub)}?history=0`, undefined, signal).then((v) => v.decisions),
      decisionItem);
  }
  // Events come oldest first: the newest 50 of the last 1000.
  fillList($('#device-events', root),
    api('GET', `/v1/events?node=${encodeURIComponent(path)}&newest=true&limit=50`, undefined, signal)
      .then((v) => v.events.reverse()),
    eventItem);
}

const rgOf = (x) => (x.rating_group != null ? `RG ${x.rating_group}: ` : '');

function sessionItem(s) {
  return el('li', { 'data-session': s.session_id },
    el('div', {}, el('strong', {}, s.subscriber), ` since ${fmtTime(s.started)} · request #${s.request_number}`),
    el('div', { class: 'muted' }, s.session_id),
    ...s.reservations.map((r) => el('div', {}, `${rgOf(r)}holds ${fmtAmount(r.unit, r.reserved)} until ${fmtTime(r.expires)}`)),
    ...s.used.map((u) => el('div', {},
      `${rgOf(u)}used ${fmtOctets(u.octets)}, ${fmtSeconds(u.seconds)}, ${u.events} events, money ${fmtMoney(u.money)}`)));
}

function serviceLine(s) {
  const f = (v) => (s.unit ? fmtAmount(s.unit, v) : String(v));
  return el('li', {}, [
    rgOf(s) + `result ${s.result_code}`,
    s.service_identifier != null && `service ${s.service_identifier}`,
    s.granted != null && `granted ${f(s.granted)}${s.requested != null ? ` of ${f(s.requested)} asked` : ''}`,
    `${s.charge} → ${s.account}`,
    s.rule && `rule ${s.rule}`,
    s.limited_by && `limited by ${s.limited_by}`,
    s.final_unit_action && `at the limit: ${s.final_unit_action}`,
    s.why,
  ].filter(Boolean).join(' · '));
}

function decisionItem(d) {
  const attrs = Object.entries(d.attributes).filter(([, v]) => v !== null && v !== false)
    .map(([k, v]) => `${k.replace(/_/g, ' ')} ${v === true ? '' : v}`.trim()).join(' · ');
  return el('li', {},
    el('div', {}, el('strong', {}, `${d.request_type} #${d.request_number}`), ` ${fmtTime(d.time)}`),
    el('div', { class: 'muted' }, d.session_id),
    attrs && el('div', { class: 'muted' }, attrs),
    el('ul', { class: 'services' }, ...d.services.map(serviceLine)),
    d.more_services ? el('div', { class: 'muted' }, `and ${d.more_services} more services`) : null);
}

// ---- events ----

const EVENT_HEAD = new Set(['id', 'seq', 'kind', 'time', 'tenant', 'path']);

// An event's own fields in words, amounts in their unit.
function eventField(e, k, v) {
  if (k === 'threshold') return v.percent != null ? `${v.percent} %` : fmtAmount(e.unit, v.amount);
  if (['used', 'limit', 'amount'].includes(k) && e.unit && typeof v === 'number') return fmtAmount(e.unit, v);
  if (k === 'octets' || (k === 'limit' && e.kind === 'velocity_exceeded')) return fmtOctets(v);
  if (k === 'window_s') return fmtSeconds(v);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function eventItem(e) {
  const details = Object.entries(e).filter(([k, v]) => !EVENT_HEAD.has(k) && v !== null)
    .map(([k, v]) => `${k.replace(/_/g, ' ')}: ${eventField(e, k, v)}`).join(' · ');
  return el('li', { class: 'event', 'data-id': e.id, 'data-kind': e.kind },
    el('div', {}, el('strong', {}, String(e.kind).replace(/_/g, ' ')), ' ',
      e.path ? el('a', { href: hashFor('node', e.path) }, e.path) : '', ` ${fmtTime(e.time)}`),
    details && el('div', { class: 'muted' }, details));
}

// Puts arriving events at the top, at most once a frame, keeping EVENT_ROWS rows.
function eventSink(list) {
  let queue = [], queued = false;
  return (e) => {
    queue.push(e);
    if (queue.length > 2 * EVENT_ROWS) queue = queue.slice(-EVENT_ROWS);
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      const newest = queue.slice(-EVENT_ROWS).reverse();
      queue = [];
      list.prepend(...newest.map(eventItem));
      while (list.children.length > EVENT_ROWS) list.lastElementChild.remove();
    });
  };
}

function showEvents(root, path, signal) {
  root.append(clone('tpl-events'));
  if (path) $('.events-title', root).textContent = `Events under ${path}`;
  const sink = eventSink($('#event-feed', root));
  const node = path ? `&node=${encodeURIComponent(path)}` : '';
  // The newest EVENT_ROWS first (not the whole outbox), then the stream from there on.
  api('GET', `/v1/events?newest=true&limit=${EVENT_ROWS}${node}`, undefined, signal)
    .then((v) => {
      v.events.forEach(sink);
      let after = String(v.next_after);
      follow(() => `/v1/events/stream?after=${after}${node}`, signal, (m) => {
        const e = JSON.parse(m.data);
        after = m.id || String(e.id);
        sink(e);
      });
    })
    .catch(fail);
}

// ---- statements ----

const STATEMENT_COLUMNS = [
  ['Data', 'octets', fmtOctets], ['Time', 'seconds', fmtSeconds], ['Events', 'events', (v) => String(v)],
  ['Money', 'money', fmtMoney], ['Records', 'records', (v) => String(v)],
];

function statementRow(line, label, tag = 'td') {
  return el('tr', { 'data-path': line.path },
    el(tag, { 'data-label': 'Path' }, label),
    ...STATEMENT_COLUMNS.map(([name, key, f]) =>
      el('td', { 'data-label': name, 'data-value': line[key], class: 'num' }, f(line[key]))));
}

function statementTable(table, lines, total) {
  table.replaceChildren(
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Path'),
      ...STATEMENT_COLUMNS.map(([name]) => el('th', { scope: 'col', class: 'num' }, name)))),
    el('tbody', {}, ...lines.map((l) => statementRow(l, l.path))),
    el('tfoot', {}, statementRow(total, 'Total', 'th')));
}

async function showStatement(root, tenant, signal) {
  root.append(clone('tpl-statement'));
  breadcrumbs($('#breadcrumbs', root), tenant, true);
  const month = $('#statement-month', root);
  month.value = app.statementMonth || new Date().toISOString().slice(0, 7);
  $('#statement-form', root).addEventListener('submit', (ev) => {
    ev.preventDefault();
    app.statementMonth = month.value;
    route();
  });
  $('#print', root).addEventListener('click', () => window.print());
  const [y, m] = month.value.split('-').map(Number);
  const from = Date.UTC(y, m - 1, 1) / 1000, to = Date.UTC(y, m, 1) / 1000;
  const st = await api('GET', `/v1/statements/${encodeURIComponent(tenant)}?from=${from}&to=${to}`, undefined, signal);
  $('.statement-title', root).textContent = `Statement: ${st.tenant}`;
  $('.statement-period', root).textContent =
    `Usage of sessions that ended from ${fmtDay(st.from)} to ${fmtDay(st.to - 1)} (UTC), as of ${new Date().toLocaleString()}.`;
  // The tenant's own line sums everything under it: the total of both tables.
  const total = st.lines.find((l) => l.path === st.tenant) || { path: st.tenant, octets: 0, seconds: 0, events: 0, money: '0', records: 0 };
  statementTable($('#statement-nodes', root), st.lines.filter((l) => !l.device && l.path !== st.tenant), total);
  statementTable($('#statement-devices', root), st.lines.filter((l) => l.device), total);
}

// ---- start ----

$('#signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  clearError();
  signIn($('#token').value.trim());
});
$('#signout').addEventListener('click', () => {
  clearError();
  signOut();
  history.replaceState(null, '', '#/'); // the next token may not reach the page this one was on
});
$('#error').addEventListener('click', clearError); // it stays on screen until read
window.addEventListener('hashchange', route);
if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY));
else $('#signin-form').hidden = false;
