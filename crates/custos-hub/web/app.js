// The Custos dashboard (docs/web.md). Every key operation runs in the WebAssembly core (crates/custos-web); this
// file does the I/O: the hub's HTTP API, live events, and the keys in IndexedDB, wrapped by a non-extractable
// WebCrypto key. Nothing here writes HTML from strings: text goes in with textContent, so a device name or a
// hub's answer cannot inject script (the CSP forbids inline script as well).
'use strict';

(() => {
  // custos_web.js (wasm-bindgen's no-modules glue, loaded first) declares the global `wasm_bindgen`.
  const core = wasm_bindgen; // eslint-disable-line no-undef
  const $ = (id) => document.getElementById(id);
  const enc = new TextEncoder();

  // ---- small helpers ---------------------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v === true) e.setAttribute(k, '');
      else if (v !== false && v != null) e.setAttribute(k, String(v));
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
  const nowSecs = () => Math.floor(Date.now() / 1000);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function ago(secs) {
    if (secs == null) return 'never seen';
    const d = Math.max(0, nowSecs() - secs);
    if (d < 5) return 'seen just now';
    if (d < 60) return `seen ${d} s ago`;
    if (d < 3600) return `seen ${Math.floor(d / 60)} min ago`;
    if (d < 86400) return `seen ${Math.floor(d / 3600)} h ago`;
    return `seen ${new Date(secs * 1000).toLocaleDateString()}`;
  }

  // ---- the hub's API ---------------------------------------------------------------------------------------

  class HubError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Same-origin fetch: the session cookie (HttpOnly, SameSite=Strict) goes along; the hub checks Origin on writes.
  async function api(method, path, { json, bytes } = {}) {
    const init = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
    if (json !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(json);
    } else if (bytes !== undefined) {
      init.headers['content-type'] = 'application/octet-stream';
      init.body = bytes;
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      throw new HubError(0, 'unreachable', 'The hub cannot be reached. Check your connection and try again.');
    }
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = null; }
    if (!r.ok && r.status !== 202) {
      if (r.status === 401 && path !== '/v1/sessions') onSessionLost();
      throw new HubError(r.status, body && body.error, (body && body.message) || `${r.status} ${r.statusText}`);
    }
    return { status: r.status, body };
  }

  // ---- keys in IndexedDB, wrapped by a non-extractable AES-GCM key -------------------------------------------

  const vault = {
    db: null,
    key: null,
    async open() {
      this.db = await new Promise((resolve, reject) => {
        const req = indexedDB.open('custos-dashboard', 1);
        req.onupgradeneeded = () => req.result.createObjectStore('kv');
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      this.key = await this.get('wrapping-key');
      if (!this.key) {
        // extractable = false: the key's bytes can never be read by script, only used to wrap and unwrap here.
        this.key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
        await this.put('wrapping-key', this.key);
      }
    },
    tx(mode, f) {
      return new Promise((resolve, reject) => {
        const t = this.db.transaction('kv', mode);
        const r = f(t.objectStore('kv'));
        t.oncomplete = () => resolve(r.result);
        t.onerror = () => reject(t.error);
        t.onabort = () => reject(t.error || new Error('storage refused the write'));
      });
    },
    get(k) { return this.tx('readonly', (s) => s.get(k)); },
    put(k, v) { return this.tx('readwrite', (s) => s.put(v, k)); },
    del(k) { return this.tx('readwrite', (s) => s.delete(k)); },
    // Each secret is sealed with the name of its slot as associated data: a sealed key moved to another
    // device's slot does not open.
    async seal(slot, bytes) {
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: enc.encode(slot) }, this.key, bytes);
      return { iv, ct: new Uint8Array(ct) };
    },
    async unseal(slot, box) {
      const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: box.iv, additionalData: enc.encode(slot) }, this.key, box.ct);
      return new Uint8Array(pt);
    },
  };

  // What this browser holds for one account: its master secret and, per device, its key and bookkeeping.
  const book = {
    account: null,
    slot(...parts) { return ['custos-web/v1', this.account, ...parts].join('/'); },
    async master() {
      const slot = this.slot('master');
      const box = await vault.get(slot);
      if (box) return vault.unseal(slot, box);
      const m = core.random_bytes(32);
      await vault.put(slot, await vault.seal(slot, m));
      return m;
    },
    async device(id) { return (await vault.get(this.slot('device', id))) || null; },
    async save(entry) { await vault.put(this.slot('device', entry.id), entry); },
    async sealKey(entry, bytes) { entry.key = await vault.seal(this.slot('device', entry.id, 'key'), bytes); },
    async key(entry) { return vault.unseal(this.slot('device', entry.id, 'key'), entry.key); },
    async sealMember(entry, m, bytes) { m.key = await vault.seal(this.slot('device', entry.id, 'member', String(m.sender)), bytes); },
    async memberKey(entry, m) { return vault.unseal(this.slot('device', entry.id, 'member', String(m.sender)), m.key); },
    // Counters are reserved on disk before a command is sealed with them: a crash never reuses one.
    async nextCounter(entry) {
      const fresh = await this.device(entry.id);
      const c = Math.max((fresh ? fresh.counter : entry.counter) + 1, Date.now());
      entry.counter = c;
      await this.save(entry);
      return c;
    },
  };

  // ---- state and views -------------------------------------------------------------------------------------

  const state = {
    me: null,
    devices: new Map(), // from the live events: id -> {device, role, online, last_seen, state, ...}
    offlineAfter: 5,
    entries: new Map(), // what this browser holds: id -> entry
    events: null,
    current: null, // the device shown in detail
    notes: new Map(), // id -> {text, kind} under each card
    verified: new Map(), // id -> {state, at}: the last state a device's authenticated answer gave
  };
  // For the end-to-end tests and anyone curious: click-to-verified-answer times of the toggles, in ms.
  window.custosMetrics = { toggles: [] };

  const views = ['login', 'devices', 'add', 'accept', 'device'];
  function show(view) {
    for (const v of views) $(`view-${v}`).hidden = v !== view;
    $('nav').hidden = view === 'login';
    document.body.dataset.view = view;
  }

  function banner(text) {
    $('banner').hidden = !text;
    $('banner').textContent = text || '';
  }

  function note(target, text, kind) {
    target.hidden = !text;
    target.textContent = text || '';
    target.className = target.className.replace(/\b(ok|err|wait)\b/g, '').trim() + (kind ? ` ${kind}` : '');
  }

  function explain(e) {
    if (e instanceof HubError) {
      if (e.status === 401 && e.code === 'unauthorized') return e.message === 'wrong name or password' ? 'Wrong name or password.' : e.message;
      if (e.status === 429) return `Too many attempts: ${e.message}. Wait a moment and try again.`;
      return e.message;
    }
    return (e && e.message) || String(e);
  }

  // ---- accounts ---------------------------------------------------------------------------------------------

  let registering = false;
  function setTab(reg) {
    registering = reg;
    $('tab-login').setAttribute('aria-selected', String(!reg));
    $('tab-register').setAttribute('aria-selected', String(reg));
    $('confirm-row').hidden = !reg;
    $('login-submit').textContent = reg ? 'Create account' : 'Log in';
    $('form-login').password.autocomplete = reg ? 'new-password' : 'current-password';
    note($('login-error'), '');
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    const f = ev.target;
    const name = f.name.value.trim();
    const password = f.password.value;
    note($('login-error'), '');
    if (registering && password !== f.confirm.value) {
      note($('login-error'), 'The two passwords differ.');
      return;
    }
    $('login-submit').disabled = true;
    try {
      if (registering) await api('POST', '/v1/accounts', { json: { name, password } });
      await api('POST', '/v1/sessions', { json: { name, password } });
      f.reset();
      await start();
    } catch (e) {
      note($('login-error'), explain(e));
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function onSessionLost() {
    if (!state.me) return;
    stop();
    show('login');
    banner('Your session ended. Log in again.');
  }

  function stop() {
    state.me = null;
    if (state.events) state.events.close();
    state.events = null;
    state.devices.clear();
    state.entries.clear();
    for (const li of cards.values()) li.remove();
    cards.clear();
  }

  async function logout() {
    try { await api('DELETE', '/v1/sessions/current'); } catch { /* the session is gone either way */ }
    stop();
    show('login');
  }

  // ---- the device list, live ---------------------------------------------------------------------------------

  async function start() {
    const { body } = await api('GET', '/v1/accounts/me');
    state.me = body;
    book.account = body.name;
    $('who').textContent = body.name;
    banner('');
    await loadEntries();
    connectEvents();
    route();
  }

  async function loadEntries() {
    state.entries.clear();
    const ids = new Set([...(state.me.owned || []), ...(state.me.shared || []).map((s) => s.device), ...state.devices.keys()]);
    for (const id of ids) {
      const e = await book.device(id);
      if (e) state.entries.set(id, e);
    }
  }

  function connectEvents() {
    if (state.events) state.events.close();
    const es = new EventSource('/v1/events');
    state.events = es;
    es.addEventListener('devices', async (ev) => {
      const data = JSON.parse(ev.data);
      state.offlineAfter = data.offline_after;
      state.devices = new Map(data.devices.map((d) => [d.device, d]));
      // A state this page verified from the device's own answer wins over a snapshot taken before it.
      for (const [id, v] of state.verified) {
        const d = state.devices.get(id);
        if (d && (d.state_at == null || d.state_at <= v.at)) d.state = v.state;
      }
      for (const id of busy) {
        const d = state.devices.get(id);
        if (d && !d.online) state.notes.set(id, { text: OFFLINE_WAIT, kind: 'wait' });
      }
      for (const id of state.devices.keys()) {
        if (!state.entries.has(id)) {
          const e = await book.device(id);
          if (e) state.entries.set(id, e);
        }
      }
      $('live').textContent = `Live · a device is offline after ${data.offline_after} s of silence`;
      renderDevices();
      if (state.current) renderDevice();
    });
    es.onerror = () => {
      $('live').textContent = 'Live updates paused: reconnecting…';
      // A closed stream after a 401 means the session ended.
      if (es.readyState === EventSource.CLOSED) api('GET', '/v1/accounts/me').catch(() => {});
    };
  }

  function displayName(id) {
    const e = state.entries.get(id);
    return (e && e.name) || id;
  }

  function canCommand(d) {
    const e = state.entries.get(d.device);
    return !!e && !d.revoked && d.role !== 'view';
  }

  // Cards are kept and updated in place, so a click (or a focused toggle) is never lost to a re-render.
  const cards = new Map();

  function renderDevices() {
    const list = $('devices');
    const items = [...state.devices.values()].sort((a, b) => displayName(a.device).localeCompare(displayName(b.device)));
    for (const [id, li] of cards) {
      if (!state.devices.has(id)) { li.remove(); cards.delete(id); }
    }
    items.forEach((d, i) => {
      let li = cards.get(d.device);
      if (!li) { li = card(d.device); cards.set(d.device, li); }
      update(li, d);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    $('empty').hidden = items.length > 0;
  }

  function card(id) {
    const sw = el('button', { class: 'switch', role: 'switch', type: 'button', 'aria-checked': 'false' });
    sw.addEventListener('click', () => {
      const d = state.devices.get(id);
      if (d) toggle(id, d.state === 'on' ? 'off' : 'on');
    });
    return el('li', { class: 'device', 'data-device': id },
      el('button', { class: 'name', type: 'button', onclick: () => { location.hash = `#device/${id}`; } }),
      sw,
      el('div', { class: 'meta' },
        el('span', { class: 'presence' }, el('span', { class: 'dot' }), el('span', { class: 'presence-text' })),
        el('span', { class: 'seen' }),
        el('span', { class: 'state-text' }),
        el('span', { class: 'role' })),
      el('div', { class: 'note' }));
  }

  function update(li, d) {
    const id = d.device;
    const e = state.entries.get(id);
    const on = d.state === 'on';
    const q = (c) => li.querySelector(c);
    li.dataset.online = String(d.online);
    li.dataset.state = d.state || '';
    q('.name').textContent = displayName(id);
    const sw = q('.switch');
    sw.setAttribute('aria-checked', String(on));
    sw.setAttribute('aria-label', `Switch ${displayName(id)}`);
    sw.disabled = !d.online || !canCommand(d) || busy.has(id);
    sw.classList.toggle('busy', busy.has(id));
    sw.title = !e ? 'This browser holds no key for this device'
      : d.role === 'view' ? 'You may only watch this device'
      : !d.online ? 'The device is offline' : on ? 'Switch off' : 'Switch on';
    q('.dot').className = `dot${d.online ? ' on' : ''}`;
    q('.presence-text').textContent = d.revoked ? 'revoked' : d.online ? 'online' : 'offline';
    q('.seen').textContent = ago(d.last_seen);
    q('.state-text').textContent = d.state ? `state: ${d.state}` : 'no state yet';
    q('.role').textContent = d.role === 'owner' ? 'owner' : `shared · ${d.role}`;
    const n = state.notes.get(id);
    const note = q('.note');
    note.className = `note ${n ? n.kind : ''}`;
    note.textContent = n ? n.text : (!e ? 'No key in this browser: pair it here, or accept a share.' : '');
  }

  // ---- commands ---------------------------------------------------------------------------------------------

  const busy = new Set();
  const OFFLINE_WAIT = 'The device is offline: the command waits at the hub until it comes back (up to 5 min).';

  // Seals a command for `id`, sends it, and waits for the device's answer, which is verified here: the page says
  // "done" only for an answer the device authenticated. Returns {status, state}.
  async function command(id, op, value, onWait) {
    const e = state.entries.get(id);
    if (!e) throw new Error('This browser holds no key for this device.');
    const owner = e.role === 'owner';
    const key = await book.key(e);
    const counter = await book.nextCounter(e);
    const expires = nowSecs() + 300;
    const msg = core.seal_command(key, owner, id, e.sender, counter, expires, op, value);
    const { body } = await api('POST', `/v1/devices/${id}/control`, { bytes: msg });
    const answer = await waitAnswer(id, body.id, onWait);
    const a = core.open_answer(key, owner, id, e.sender, counter, unhex(answer));
    return { status: a.status, state: a.state };
  }

  async function waitAnswer(id, msgId, onWait) {
    for (;;) {
      // Short polls: a device that goes quiet meanwhile is reported within the hub's presence threshold.
      const wait = Math.max(2, Math.min(25, state.offlineAfter));
      const { status, body } = await api('GET', `/v1/devices/${id}/control/${msgId}?wait=${wait}`);
      if (body.status === 'answered' && body.answer) return body.answer;
      if (body.status === 'expired') throw new Error('The command expired before the device took it.');
      if (status === 202 && onWait) onWait(body.online);
    }
  }

  const refusals = {
    replayed: 'The device refused the command as a replay.',
    expired: 'The device refused the command: it arrived after its expiry.',
    failed: 'The device could not do it: its actuator failed.',
    bad_value: 'The device does not take that value.',
  };

  async function toggle(id, value) {
    const t0 = performance.now();
    busy.add(id);
    state.notes.set(id, { text: `Switching ${value}…`, kind: 'wait' });
    renderDevices();
    try {
      const a = await command(id, 'set', value, (online) => {
        state.notes.set(id, {
          text: online ? 'Waiting for the device…' : OFFLINE_WAIT,
          kind: 'wait',
        });
        renderDevices();
      });
      if (a.status === 'done') {
        const d = state.devices.get(id);
        if (d) d.state = a.state;
        state.verified.set(id, { state: a.state, at: nowSecs() });
        state.notes.set(id, { text: `Done: the device says ${a.state}.`, kind: 'ok' });
      } else {
        state.notes.set(id, { text: refusals[a.status] || a.status, kind: 'err' });
      }
    } catch (e) {
      state.notes.set(id, { text: explain(e), kind: 'err' });
    } finally {
      busy.delete(id);
      renderDevices();
      window.custosMetrics.toggles.push(performance.now() - t0);
    }
  }

  // ---- adding a device: pairing and claim, in this browser -------------------------------------------------

  function steps(names) {
    const ol = $('add-steps');
    ol.hidden = false;
    ol.replaceChildren(...names.map((n) => el('li', { text: n })));
    return (i) => [...ol.children].forEach((li, j) => { li.className = j < i ? 'done' : j === i ? 'now' : ''; });
  }

  // The relay's mailbox toward this browser, from `cursor` on; waits up to `wait` s.
  async function relayRecv(id, cursor, wait) {
    const { body } = await api('GET', `/v1/pairing/${id}/to-keeper?after=${cursor}&wait=${wait}`);
    return body.messages || [];
  }

  async function addDevice(ev) {
    ev.preventDefault();
    const f = ev.target;
    note($('add-error'), '');
    let id;
    try {
      id = core.device_id(f.device.value);
      core.check_owner_code(f.code.value);
    } catch (e) {
      note($('add-error'), explain(e));
      return;
    }
    const mark = steps(['Wait for the device', 'Pair with the owner code', 'Provision its keys', 'Claim it for your account']);
    $('add-submit').disabled = true;
    const deadline = Date.now() + 90_000;
    let pairing = null;
    try {
      const existing = await book.device(id);
      const epoch = existing && existing.epochs ? Math.max(0, ...existing.epochs.map((x) => x.epoch)) + 1 : 1;
      // The epoch: from the start of this month (UTC) for one year, as `custos keeper pair` does.
      const now = new Date();
      const from = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
      const until = Date.UTC(now.getUTCFullYear() + 1, now.getUTCMonth(), 1) / 1000;
      const schedule = 'month/week/day';
      const master = await book.master();
      pairing = new core.Pairing(id, f.code.value, master, epoch, schedule, from, until, nowSecs());
      master.fill(0);
      // Only answers that arrive after our PairInit count.
      let cursor = 0;
      const old = await relayRecv(id, 0, 0);
      if (old.length) cursor = old[old.length - 1].seq;
      mark(0);
      for (;;) {
        try {
          await api('POST', `/v1/pairing/${id}/to-device`, { bytes: pairing.init() });
          break;
        } catch (e) {
          if (!(e instanceof HubError && e.status === 403) || Date.now() > deadline) {
            throw e instanceof HubError && e.status === 403
              ? new Error('The device is not waiting for its owner. Start it (it must be joined to this hub) and try again.')
              : e;
          }
          await sleep(1000);
        }
      }
      mark(1);
      let provision = null;
      while (!provision) {
        if (Date.now() > deadline) throw new Error('The device did not answer. Check the owner code and that the device runs.');
        for (const m of await relayRecv(id, cursor, 10)) {
          cursor = m.seq;
          try { provision = pairing.accept(unhex(m.body)); break; } catch { /* not the device's answer: skip */ }
        }
      }
      mark(2);
      await api('POST', `/v1/pairing/${id}/to-device`, { bytes: provision });
      let acked = false;
      while (!acked) {
        if (Date.now() > deadline) throw new Error('The device did not confirm its keys.');
        for (const m of await relayRecv(id, cursor, 10)) {
          cursor = m.seq;
          if (pairing.ack(unhex(m.body))) { acked = true; break; }
        }
      }
      const entry = existing || { id, role: 'owner', sender: 0, counter: 0, epochs: [], listVersion: 0, nextSender: 1, members: [] };
      entry.name = f.label.value.trim() || entry.name || '';
      entry.role = 'owner';
      entry.sender = 0;
      entry.epochs.push({ epoch, schedule, from, until });
      const udk = pairing.user_device_key();
      await book.sealKey(entry, udk);
      await book.save(entry);
      state.entries.set(id, entry);
      mark(3);
      const owned = (state.me.owned || []).includes(id) || (state.devices.get(id) || {}).role === 'owner';
      if (!owned) {
        const { body: claim } = await api('POST', `/v1/devices/${id}/claim`);
        const seal = core.seal_claim(udk, id, claim.token);
        const { body: sent } = await api('POST', `/v1/devices/${id}/control`, { bytes: seal });
        await waitAnswer(id, sent.id);
      }
      udk.fill(0);
      mark(4);
      f.reset();
      $('add-steps').hidden = true;
      await start();
      location.hash = '#devices';
    } catch (e) {
      note($('add-error'), explain(e));
    } finally {
      if (pairing) pairing.free();
      $('add-submit').disabled = false;
    }
  }

  async function acceptShare(ev) {
    ev.preventDefault();
    const f = ev.target;
    note($('accept-error'), '');
    try {
      const share = core.parse_share_code(f.code.value);
      const entry = (await book.device(share.device)) || { id: share.device, counter: 0, epochs: [], members: [] };
      if (entry.role === 'owner') throw new Error('You own this device already.');
      entry.role = 'member';
      entry.sender = share.sender;
      entry.name = f.label.value.trim() || entry.name || '';
      await book.sealKey(entry, share.key);
      share.key.fill(0);
      await book.save(entry);
      state.entries.set(entry.id, entry);
      f.reset();
      location.hash = '#devices';
      renderDevices();
    } catch (e) {
      note($('accept-error'), explain(e));
    }
  }

  // ---- one device: state, value, chart, sharing ---------------------------------------------------------------

  function renderDevice() {
    const id = state.current;
    const d = state.devices.get(id) || { device: id, online: false, role: 'view' };
    const e = state.entries.get(id);
    $('dev-name').textContent = displayName(id);
    $('dev-id').textContent = id;
    $('dev-status').textContent = d.revoked ? 'revoked' : d.online ? `online · ${ago(d.last_seen)}` : `offline · ${ago(d.last_seen)}`;
    $('dev-state').textContent = d.state ? `State: ${d.state}` : 'No state reported yet';
    $('form-set').querySelector('button').disabled = !d.online || !canCommand(d);
    const owner = !!e && e.role === 'owner';
    $('share-card').hidden = !owner;
    $('data-card').hidden = !owner || !(e.epochs || []).length;
    if (owner) renderMembers(e);
  }

  function renderMembers(e) {
    const items = (e.members || []).map((m) => el('li', {},
      el('span', { text: `${m.account} · sender ${m.sender}` }),
      el('button', { class: 'ghost', type: 'button', text: 'Revoke', 'data-account': m.account, onclick: () => revoke(e.id, m.account) })));
    $('members').replaceChildren(...(items.length ? items : [el('li', { class: 'muted', text: 'Only you.' })]));
  }

  async function setValue(ev) {
    ev.preventDefault();
    const id = state.current;
    const value = $('set-value').value.trim();
    if (!value) return;
    note($('dev-msg'), 'Sending…', 'wait');
    try {
      const a = await command(id, 'set', value, (online) => note($('dev-msg'),
        online ? 'Waiting for the device…' : 'The device is offline: the command waits at the hub until it comes back.', 'wait'));
      if (a.status === 'done') note($('dev-msg'), `Done: the device says ${a.state}.`, 'ok');
      else note($('dev-msg'), refusals[a.status] || a.status, 'err');
    } catch (e) {
      note($('dev-msg'), explain(e), 'err');
    }
  }

  // Seals the current member list as a new version and waits for the device's authenticated acknowledgement.
  async function sendMembers(e, progress) {
    const udk = await book.key(e);
    const senders = [];
    const keys = [];
    for (const m of e.members) {
      senders.push(m.sender);
      keys.push(...(await book.memberKey(e, m)));
    }
    e.listVersion = Math.max(e.listVersion + 1, Date.now());
    await book.save(e);
    const msg = core.seal_list(udk, e.id, e.listVersion, Uint32Array.from(senders), Uint8Array.from(keys));
    keys.fill(0);
    const { body } = await api('POST', `/v1/devices/${e.id}/control`, { bytes: msg });
    const ack = await waitAnswer(e.id, body.id, (online) => progress(online
      ? 'Waiting for the device to take the new list…'
      : 'The device is offline: the new list waits at the hub until it comes back.'));
    const held = core.open_list_ack(udk, e.id, unhex(ack));
    udk.fill(0);
    if (held !== e.listVersion) throw new Error(`The device acknowledged list version ${held}, not ${e.listVersion}.`);
  }

  async function share(ev) {
    ev.preventDefault();
    const e = state.entries.get(state.current);
    const account = $('share-account').value.trim().toLowerCase();
    const progress = (t) => note($('share-msg'), t, 'wait');
    $('share-code').hidden = true;
    progress(`Sharing with ${account}…`);
    try {
      if (e.members.some((m) => m.account === account)) throw new Error(`${account} may control it already.`);
      await api('POST', `/v1/devices/${e.id}/shares`, { json: { account, rights: 'control' } });
      const m = { account, sender: e.nextSender };
      e.nextSender += 1;
      const key = core.random_bytes(32);
      await book.sealMember(e, m, key);
      e.members.push(m);
      await book.save(e);
      await sendMembers(e, progress);
      $('share-to').textContent = account;
      $('share-code-text').textContent = core.share_code(e.id, m.sender, key);
      key.fill(0);
      $('share-code').hidden = false;
      $('share-account').value = '';
      note($('share-msg'), `${account} may now control it, once they accept the code.`, 'ok');
      renderMembers(e);
    } catch (err) {
      note($('share-msg'), explain(err), 'err');
    }
  }

  async function revoke(id, account) {
    const e = state.entries.get(id);
    const progress = (t) => note($('share-msg'), t, 'wait');
    progress(`Revoking ${account}…`);
    $('share-code').hidden = true;
    try {
      // The hub stops queueing their commands at once; the device stops obeying once it holds the new list.
      await api('DELETE', `/v1/devices/${id}/shares/${encodeURIComponent(account)}`).catch((err) => {
        if (!(err instanceof HubError && err.status === 404)) throw err;
      });
      e.members = e.members.filter((m) => m.account !== account);
      await book.save(e);
      await sendMembers(e, progress);
      note($('share-msg'), `${account} can no longer control it: the device holds the new list.`, 'ok');
      renderMembers(e);
    } catch (err) {
      note($('share-msg'), explain(err), 'err');
    }
  }

  // ---- the chart ----------------------------------------------------------------------------------------------

  function toLocalInput(secs) {
    const d = new Date(secs * 1000);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  function preset(secs) {
    const f = $('form-range');
    const until = nowSecs() + 60;
    f.from.value = toLocalInput(until - secs);
    f.until.value = toLocalInput(until);
    drawRange();
  }

  async function drawRange(ev) {
    if (ev) ev.preventDefault();
    const f = $('form-range');
    const from = Math.floor(new Date(f.from.value).getTime() / 1000);
    const until = Math.floor(new Date(f.until.value).getTime() / 1000);
    const msg = $('chart-msg');
    if (!(from < until)) { msg.textContent = 'Pick a start before the end.'; return; }
    const e = state.entries.get(state.current);
    msg.textContent = 'Fetching and decrypting…';
    try {
      const { points, refused } = await readings(e, from, until);
      draw(points, from, until);
      msg.textContent = `${points.length} reading${points.length === 1 ? '' : 's'} decrypted in this browser` +
        (refused ? `; ${refused} record${refused === 1 ? '' : 's'} did not open and were left out` : '') + '.';
    } catch (err) {
      msg.textContent = explain(err);
    }
  }

  // The hub returns ciphertext only; each record is opened here with keys derived from this browser's master.
  async function readings(e, from, until) {
    const master = await book.master();
    const points = [];
    let refused = 0;
    try {
      for (const ep of e.epochs) {
        const reader = new core.Reader(master, e.id, ep.epoch, ep.schedule, ep.from, ep.until);
        try {
          const leaves = reader.leaf_range(from, until);
          if (!leaves.length) continue;
          let after = null;
          for (let page = 0; page < 50; page++) {
            const q = `epoch=${ep.epoch}&from_leaf=${leaves[0]}&until_leaf=${leaves[1]}&limit=1000${after != null ? `&after=${after}` : ''}`;
            const { body } = await api('GET', `/v1/devices/${e.id}/records?${q}`);
            for (const r of body.records) {
              let text;
              try { text = reader.open(r.record); } catch { refused++; continue; }
              const p = point(text, r.received_at);
              if (p && p.t >= from && p.t < until) points.push(p);
            }
            after = body.next_after;
            if (after == null) break;
          }
        } finally {
          reader.free();
        }
      }
    } finally {
      master.fill(0);
    }
    points.sort((a, b) => a.t - b.t);
    return { points, refused };
  }

  // A reading is JSON such as {"t": "2026-03-09T10:00:00Z", "temp_c": 21.5} or a bare number.
  function point(text, receivedAt) {
    let t = receivedAt;
    let v = Number(text);
    if (Number.isNaN(v)) {
      try {
        const o = JSON.parse(text);
        if (o && typeof o === 'object') {
          if (typeof o.t === 'string' && !Number.isNaN(Date.parse(o.t))) t = Date.parse(o.t) / 1000;
          const k = Object.keys(o).find((key) => key !== 't' && typeof o[key] === 'number');
          v = k === undefined ? NaN : o[k];
        }
      } catch { v = NaN; }
    }
    return Number.isFinite(v) ? { t, v } : null;
  }

  function draw(points, from, until) {
    const c = $('chart');
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || 800;
    const hgt = Math.round(w * 3 / 8);
    c.width = Math.round(w * ratio);
    c.height = Math.round(hgt * ratio);
    const g = c.getContext('2d');
    g.scale(ratio, ratio);
    const css = getComputedStyle(document.documentElement);
    const fg = css.getPropertyValue('--muted').trim() || '#666';
    const accent = css.getPropertyValue('--accent').trim() || '#1f4e79';
    g.clearRect(0, 0, w, hgt);
    g.font = '12px system-ui, sans-serif';
    g.fillStyle = fg;
    const pad = { l: 44, r: 12, t: 12, b: 26 };
    if (!points.length) {
      g.fillText('No readings in this range.', pad.l, hgt / 2);
      return;
    }
    let lo = Math.min(...points.map((p) => p.v));
    let hi = Math.max(...points.map((p) => p.v));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    // Fit the time axis to the readings when they fill only part of the range picked (a new device, a gap).
    const t0 = points.length > 1 ? Math.max(from, points[0].t) : from;
    const t1 = points.length > 1 ? Math.min(until, points[points.length - 1].t) : until;
    if (t1 > t0) { from = t0; until = t1; }
    const x = (t) => pad.l + (t - from) / (until - from) * (w - pad.l - pad.r);
    const y = (v) => pad.t + (hi - v) / (hi - lo) * (hgt - pad.t - pad.b);
    g.strokeStyle = fg;
    g.globalAlpha = 0.25;
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(w - pad.r, y(v)); g.stroke();
    }
    g.globalAlpha = 1;
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      g.fillText(v.toFixed(1), 4, y(v) + 4);
    }
    for (let i = 0; i <= 3; i++) {
      const t = from + (until - from) * i / 3;
      const short = until - from < 3600;
      const label = new Date(t * 1000).toLocaleString([], short
        ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
        : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
      g.fillText(label, Math.min(x(t), w - 90), hgt - 8);
    }
    g.strokeStyle = accent;
    g.lineWidth = 2;
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
    g.stroke();
    g.fillStyle = accent;
    if (points.length <= 200) for (const p of points) { g.beginPath(); g.arc(x(p.t), y(p.v), 2.5, 0, 2 * Math.PI); g.fill(); }
    c.dataset.points = String(points.length);
  }

  // ---- routing ------------------------------------------------------------------------------------------------

  function route() {
    if (!state.me) { show('login'); return; }
    const [view, arg] = location.hash.replace(/^#/, '').split('/');
    state.current = null;
    if (view === 'add') show('add');
    else if (view === 'accept') show('accept');
    else if (view === 'device' && arg) {
      state.current = arg;
      note($('dev-msg'), '');
      note($('share-msg'), '');
      $('share-code').hidden = true;
      show('device');
      renderDevice();
      if (!$('data-card').hidden) preset(86400);
    } else {
      show('devices');
      renderDevices();
    }
  }

  async function boot() {
    try {
      const meta = document.querySelector('meta[name="custos-wasm"]');
      // The module must match the hash index.html names: a swapped module is refused by the browser.
      await core({ module_or_path: fetch(meta.content, { integrity: meta.dataset.integrity }) });
      await vault.open();
    } catch (e) {
      show('login');
      $('form-login').hidden = true;
      banner(`This browser cannot run the dashboard: ${explain(e)}`);
      return;
    }
    $('version').textContent = core.version();
    $('tab-login').addEventListener('click', () => setTab(false));
    $('tab-register').addEventListener('click', () => setTab(true));
    $('form-login').addEventListener('submit', submitLogin);
    $('logout').addEventListener('click', logout);
    $('open-add').addEventListener('click', () => { location.hash = '#add'; });
    $('open-accept').addEventListener('click', () => { location.hash = '#accept'; });
    $('form-add').addEventListener('submit', addDevice);
    $('form-accept').addEventListener('submit', acceptShare);
    $('form-set').addEventListener('submit', setValue);
    $('form-share').addEventListener('submit', share);
    $('form-range').addEventListener('submit', drawRange);
    $('copy-code').addEventListener('click', () => navigator.clipboard && navigator.clipboard.writeText($('share-code-text').textContent));
    for (const b of document.querySelectorAll('[data-preset]')) b.addEventListener('click', () => preset(Number(b.dataset.preset)));
    for (const b of document.querySelectorAll('[data-back]')) b.addEventListener('click', () => { location.hash = '#devices'; });
    window.addEventListener('hashchange', route);
    // Presence text ("seen 12 s ago") ages between events.
    setInterval(() => { if (state.me && document.body.dataset.view === 'devices') renderDevices(); }, 5000);
    try {
      await start();
    } catch {
      show('login');
    }
    // Navigation start to a usable page (the WebAssembly compiled, the keys opened, the session checked).
    window.custosMetrics.ready = performance.now();
    document.body.dataset.ready = 'true';
  }

  boot();
})();
