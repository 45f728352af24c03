// keygate console: the dashboard flows over the admin API (keygate/admin/admin_api.h).
//
// The admin key lives in `adminKey` below and nowhere else: not in web storage, a cookie or
// the URL; reloading the page signs out. Every node is built with DOM calls and textContent
// (the page's CSP forbids HTML parsed from strings). Plain script, no build step.
'use strict';

(() => {
  let adminKey = null;
  let me = null;
  let scopeList = [];     // [{name, implies}]
  let environments = [];  // [{name, tag, default_rate_limit}]
  let currentEnv = '';
  let keysCursor = '';
  let keysRequest = 0;
  let keysName = '';  // the search the list shows
  let auditAfter = '';
  let auditFilter = '';
  let auditRequest = 0;
  let searchTimer = 0;
  const keys = new Map();  // id -> key, as last read
  let editing = null;      // the key the key dialog modifies; null: it creates
  let shownLimits = '';    // the rate limit inputs as the key dialog opened
  let rolling = null;
  let revealing = false;  // a reveal is on its way
  let deleting = null;

  const $ = (id) => document.getElementById(id);

  // el('td', {class: 'x'}, child, 'text', ...): a node with attributes and children.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem && problem.detail ? problem.detail : `the server answered ${status}`);
      this.status = status;
      this.field = problem && problem.field ? problem.field : '';
      this.code = problem && problem.code ? problem.code : '';
    }
  }

  // One call of the admin API: {data, status}, or throws ApiError.
  async function api(method, path, body, headers) {
    const h = Object.assign({Authorization: `Bearer ${adminKey}`}, headers || {});
    const init = {method, headers: h, cache: 'no-store', credentials: 'omit',
      referrerPolicy: 'no-referrer', redirect: 'error'};
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    } else if (method !== 'GET') {
      init.body = '';
    }
    let r;
    try {
      r = await fetch(`api/v1/${path}`, init);
    } catch (e) {
      throw new ApiError(0, {detail: 'the server cannot be reached'});
    }
    const text = await r.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!r.ok) {
      const err = new ApiError(r.status, data);
      if (r.status === 401 && adminKey !== null && path !== 'me') {
        signOut('The admin key is no longer accepted. Sign in again.');
      }
      if (r.status === 429 || r.status === 503) {
        const after = r.headers.get('Retry-After');
        if (after) err.message += ` (try again in ${after} s)`;
      }
      throw err;
    }
    return {data, status: r.status};
  }

  const keyPath = (id) => `keys/${encodeURIComponent(id)}`;
  const ifMatch = (k) => ({'If-Match': `"${k.version}"`});

  function showError(target, e) {
    $(target).textContent = e instanceof Error ? e.message : String(e);
  }
  function clearErrors() {
    for (const id of ['app-error', 'key-form-error', 'roll-error', 'delete-error',
      'personal-error']) {
      $(id).textContent = '';
    }
  }
  function notice(text) {
    $('notice').textContent = text;
  }

  // --- Times --------------------------------------------------------------------------------
  function when(t) {
    if (!t) return 'never';
    return t.replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC');
  }
  // datetime-local (read as UTC) <-> RFC 3339.
  function toInputTime(t) {
    return t ? t.slice(0, 16) : '';
  }
  function fromInputTime(v) {
    return v ? `${v.length === 16 ? `${v}:00` : v}Z` : null;
  }

  // --- Sign in and out ----------------------------------------------------------------------
  async function signIn(ev) {
    ev.preventDefault();
    const input = $('admin-key');
    const candidate = input.value.trim();
    input.value = '';
    $('sign-in-error').textContent = '';
    if (!candidate) {
      $('sign-in-error').textContent = 'Paste an admin key first.';
      input.focus();
      return;
    }
    adminKey = candidate;
    try {
      me = (await api('GET', 'me')).data;
      const [s, e] = await Promise.all([api('GET', 'scopes'), api('GET', 'environments')]);
      scopeList = s.data.scopes;
      environments = e.data.environments;
    } catch (e) {
      adminKey = null;
      me = null;
      $('sign-in-error').textContent = `That key was refused: ${e.message}`;
      input.focus();
      return;
    }
    $('who').textContent = `Signed in as ${me.owner} (key ${me.name}, ${me.environment})`;
    $('who').hidden = false;
    $('sign-out').hidden = false;
    $('sign-in').hidden = true;
    $('app').hidden = false;
    currentEnv = environments.some((x) => x.name === me.environment) ?
      me.environment : (environments[0] || {name: ''}).name;
    buildEnvTabs();
    buildScopeBoxes();
    fillEnvSelect($('f-environment'));
    fillEnvSelect($('p-environment'));
    showSection('keys');
    await loadKeys(true);
    $('keys-title').focus();
  }

  function signOut(message) {
    adminKey = null;
    me = null;
    keys.clear();
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    $('keys-body').replaceChildren();
    $('audit-body').replaceChildren();
    $('token-value').value = '';
    $('token-webhook-secret').value = '';
    $('who').hidden = true;
    $('sign-out').hidden = true;
    $('app').hidden = true;
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    $('admin-key').focus();
  }

  // --- Sections and environment tabs ---------------------------------------------------------
  function showSection(which) {
    const keysShown = which === 'keys';
    $('keys-view').hidden = !keysShown;
    $('audit-view').hidden = keysShown;
    $('nav-keys').removeAttribute('aria-current');
    $('nav-audit').removeAttribute('aria-current');
    $(keysShown ? 'nav-keys' : 'nav-audit').setAttribute('aria-current', 'page');
    clearErrors();
  }

  function buildEnvTabs() {
    const tabs = $('env-tabs');
    tabs.replaceChildren();
    for (const env of environments) {
      const selected = env.name === currentEnv;
      const tab = el('button', {type: 'button', role: 'tab', id: `tab-${env.name}`,
        'aria-selected': selected ? 'true' : 'false', 'aria-controls': 'keys-table',
        tabindex: selected ? '0' : '-1', text: env.name});
      tab.addEventListener('click', () => selectEnv(env.name, false));
      tab.addEventListener('keydown', (ev) => {
        const i = environments.findIndex((x) => x.name === env.name);
        let next = -1;
        if (ev.key === 'ArrowRight') next = (i + 1) % environments.length;
        if (ev.key === 'ArrowLeft') next = (i + environments.length - 1) % environments.length;
        if (ev.key === 'Home') next = 0;
        if (ev.key === 'End') next = environments.length - 1;
        if (next < 0) return;
        ev.preventDefault();
        selectEnv(environments[next].name, true);
      });
      tabs.append(tab);
    }
  }

  async function selectEnv(name, focus) {
    currentEnv = name;
    for (const tab of $('env-tabs').children) {
      const selected = tab.textContent === name;
      tab.setAttribute('aria-selected', selected ? 'true' : 'false');
      tab.tabIndex = selected ? 0 : -1;
      if (selected && focus) tab.focus();
    }
    await loadKeys(true);
  }

  function fillEnvSelect(select) {
    select.replaceChildren();
    for (const env of environments) select.append(el('option', {value: env.name, text: env.name}));
  }

  // --- The key list ---------------------------------------------------------------------------
  async function loadKeys(fresh) {
    // Searches overlap while typing: only the latest answer is shown.
    const request = ++keysRequest;
    if (fresh) {
      keysCursor = '';
      keysName = $('search').value.trim();
    }
    const q = new URLSearchParams({environment: currentEnv, limit: '50'});
    const name = keysName;
    if (name) q.set('name', name);
    if (keysCursor) q.set('cursor', keysCursor);
    try {
      const page = (await api('GET', `keys?${q}`)).data;
      if (request !== keysRequest) return;
      if (fresh) {
        keys.clear();
        $('keys-body').replaceChildren();
      }
      for (const k of page.keys) {
        keys.set(k.id, k);
        $('keys-body').append(keyRow(k));
      }
      keysCursor = page.next_cursor || '';
      $('keys-more').hidden = !keysCursor;
      $('keys-empty').hidden = keys.size !== 0;
      $('keys-caption').textContent = `Keys in ${currentEnv}${name ? ` named like "${name}"` : ''}`;
    } catch (e) {
      showError('app-error', e);
    }
  }

  function keyRow(k) {
    const blocked = k.state !== 'active';
    const status = el('td', {class: 'status'},
      el('span', {class: `dot ${blocked ? 'blocked' : 'active'}`, 'aria-hidden': 'true'}),
      blocked ? 'Blocked' : 'Active');
    const nameCell = el('td', {class: 'name'}, el('strong', {text: k.name}));
    if (k.kind === 'personal') nameCell.append(' ', el('span', {class: 'badge', text: 'personal'}));
    if (k.description) nameCell.append(el('div', {class: 'hint', text: k.description}));
    const label = (verb) => `${verb} ${k.name}`;
    const actions = el('td', {class: 'actions'},
      el('button', {type: 'button', class: 'secondary', 'aria-label': label(blocked ? 'Unblock' : 'Block'),
        text: blocked ? 'Unblock' : 'Block', onclick: () => setBlocked(k.id, !blocked)}),
      el('button', {type: 'button', class: 'secondary', 'aria-label': label('Modify'),
        text: 'Modify', onclick: () => openKeyDialog(k.id)}),
      el('button', {type: 'button', class: 'secondary', 'aria-label': label('Roll'),
        text: 'Roll', onclick: () => openRoll(k.id)}),
      el('button', {type: 'button', class: 'secondary', 'aria-label': label('Copy token of'),
        text: 'Copy token', onclick: () => openCopy(k.id)}),
      el('button', {type: 'button', class: 'danger', 'aria-label': label('Delete'),
        text: 'Delete', onclick: () => openDelete(k.id)}));
    const scopes = k.scopes.length ? k.scopes.join(', ') : 'none';
    let token = k.hint;
    if (k.previous) token += ` (previous ${k.previous.hint} until ${when(k.previous.valid_until)})`;
    return el('tr', {id: `row-${k.id}`, 'data-key': k.id}, status, nameCell,
      el('td', {text: k.owner}), el('td', {text: scopes}), el('td', {class: 'mono', text: token}),
      el('td', {text: when(k.expires)}), el('td', {text: when(k.last_used)}), actions);
  }

  function replaceRow(k) {
    keys.set(k.id, k);
    const old = $(`row-${k.id}`);
    if (old) old.replaceWith(keyRow(k));
  }

  // Puts the focus back on a row's button (its row was just rebuilt), or on the search field.
  function focusRowButton(id, verb) {
    const row = $(`row-${id}`);
    const k = keys.get(id);
    const button = row && k ? row.querySelector(`button[aria-label="${verb} ${k.name}"]`) : null;
    (button || $('search')).focus();
  }

  async function setBlocked(id, block) {
    clearErrors();
    try {
      const updated = (await api('POST', `${keyPath(id)}/${block ? 'revoke' : 'restore'}`)).data;
      replaceRow(updated);
      notice(`Key ${updated.name} ${block ? 'blocked: its token is refused' : 'unblocked'}.`);
      focusRowButton(id, block ? 'Unblock' : 'Block');
    } catch (e) {
      showError('app-error', e);
    }
  }

  // --- Create and modify ----------------------------------------------------------------------
  function buildScopeBoxes() {
    const box = $('f-scopes');
    box.replaceChildren();
    for (const s of scopeList) {
      const input = el('input', {type: 'checkbox', id: `scope-${s.name}`, value: s.name});
      input.addEventListener('change', syncImplied);
      box.append(el('span', {class: 'scope'}, input,
        el('label', {for: `scope-${s.name}`, text: s.name})));
    }
  }

  // A scope that implies others (admin) checks and locks them.
  function syncImplied() {
    const implied = new Set();
    for (const s of scopeList) {
      if ($(`scope-${s.name}`).checked) for (const i of s.implies) implied.add(i);
    }
    for (const s of scopeList) {
      const input = $(`scope-${s.name}`);
      if (implied.has(s.name)) {
        input.checked = true;
        input.disabled = true;
      } else if (input.disabled) {
        input.disabled = false;
        input.checked = false;
      }
    }
  }

  function checkedScopes() {
    return scopeList.map((s) => $(`scope-${s.name}`))
        .filter((i) => i.checked && !i.disabled).map((i) => i.value);
  }

  function openKeyDialog(id) {
    clearErrors();
    editing = id ? keys.get(id) : null;
    const k = editing;
    $('key-dialog-title').textContent = k ? `Modify ${k.name}` : 'Create key';
    $('key-submit').textContent = k ? 'Save' : 'Create';
    $('f-owner-row').hidden = !!k;
    $('f-env-row').hidden = !!k;
    $('f-name').value = k ? k.name : '';
    $('f-description').value = k ? k.description : '';
    $('f-owner').value = '';
    $('f-environment').value = currentEnv;
    for (const s of scopeList) {
      const input = $(`scope-${s.name}`);
      input.disabled = false;
      input.checked = k ? k.scopes.includes(s.name) : false;
    }
    syncImplied();
    $('f-expires').value = k ? toInputTime(k.expires) : '';
    const rl = k && k.rate_limit;
    $('f-rate').value = rl ? rl.rate : '';
    $('f-period').value = rl ? rl.period_ms / 1000 : '';
    $('f-burst').value = rl && rl.burst !== undefined ? rl.burst : '';
    // The form shows times to the minute: what the user leaves alone is not sent back.
    shownLimits = limitInputs();
    $('f-webhook').value = k ? k.webhook_url : '';
    $('f-accounts').value = k ? k.accounts.join(', ') : '';
    $('f-metadata').value = k ?
      Object.entries(k.metadata).map(([a, b]) => `${a}=${b}`).join('\n') : '';
    $('key-dialog').showModal();
    $('f-name').focus();
  }

  function formBody() {
    const body = {
      name: $('f-name').value.trim(),
      description: $('f-description').value,
      scopes: checkedScopes(),
      webhook_url: $('f-webhook').value.trim(),
      accounts: $('f-accounts').value.split(',').map((a) => a.trim()).filter((a) => a),
      metadata: {},
    };
    for (const line of $('f-metadata').value.split('\n')) {
      if (!line.trim()) continue;
      const eq = line.indexOf('=');
      if (eq <= 0) throw new ApiError(400, {detail: `metadata: "${line}" is not key=value`,
        field: 'metadata'});
      body.metadata[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
    const expires = fromInputTime($('f-expires').value);
    const rate = $('f-rate').value;
    const period = $('f-period').value;
    const burst = $('f-burst').value;
    let rateLimit = null;
    if (rate || period || burst) {
      rateLimit = {rate: Number(rate || 0), period_ms: Math.round(Number(period || 0) * 1000)};
      if (burst) rateLimit.burst = Number(burst);
    }
    if (editing) {
      if ($('f-expires').value !== toInputTime(editing.expires)) body.expires = expires;
      if (limitInputs() !== shownLimits) body.rate_limit = rateLimit;
    } else {
      body.environment = $('f-environment').value;
      const owner = $('f-owner').value.trim();
      if (owner) body.owner = owner;
      if (expires) body.expires = expires;
      if (rateLimit) body.rate_limit = rateLimit;
    }
    return body;
  }

  function limitInputs() {
    return [$('f-rate').value, $('f-period').value, $('f-burst').value].join('/');
  }

  const fieldInputs = {name: 'f-name', description: 'f-description', owner: 'f-owner',
    environment: 'f-environment', expires: 'f-expires', rate_limit: 'f-rate',
    webhook_url: 'f-webhook', accounts: 'f-accounts', metadata: 'f-metadata'};

  async function submitKey(ev) {
    ev.preventDefault();
    clearErrors();
    try {
      const body = formBody();
      if (editing) {
        const k = editing;
        const updated = (await api('PATCH', keyPath(k.id), body, ifMatch(k))).data;
        $('key-dialog').close();
        replaceRow(updated);
        notice(`Key ${updated.name} saved.`);
        focusRowButton(updated.id, 'Modify');
      } else {
        const created = (await api('POST', 'keys', body)).data;
        $('key-dialog').close();
        if (created.key.environment !== currentEnv) {
          await selectEnv(created.key.environment, false);
        } else {
          await loadKeys(true);
        }
        notice(`Key ${created.key.name} created.`);
        showToken(created.key, created.token, false, created.webhook_secret);
      }
    } catch (e) {
      showError('key-form-error', e);
      const base = e.field ? e.field.split(/[.[]/)[0] : '';
      const scopeField = base === 'scopes' && scopeList.length ? `scope-${scopeList[0].name}` : '';
      const target = fieldInputs[base] || scopeField;
      if (target && $(target)) $(target).focus();
      if (e.status === 412 && editing) {
        $('key-form-error').textContent =
            'Someone changed this key meanwhile. Close this form and open it again.';
        // Read it again, so that the form opened next starts from its current version.
        try {
          replaceRow((await api('GET', keyPath(editing.id))).data);
        } catch (ignored) {
          // The list's next load reads it.
        }
      }
    }
  }

  // --- The token, once ------------------------------------------------------------------------
  // `revealed`: read back from a recoverable key (not newly minted).
  // `webhookSecret`: the key's own webhook signing secret, on creation (per-key secrets).
  function showToken(k, token, revealed = false, webhookSecret = undefined) {
    $('token-title').textContent = revealed ? `Token of ${k.name}` : 'Your new token';
    $('token-warning').textContent = k.recoverable ?
      'Copy this token and keep it secret. keygate keeps it encrypted: an admin can show it ' +
        'again, and every time is recorded in the audit log.' :
      'Copy this token now and keep it secret. keygate stores only its hash: it will never ' +
        'be shown again.';
    $('token-key-name').textContent = k.name;
    $('token-value').value = token;
    $('token-webhook').hidden = !webhookSecret;
    $('token-webhook-secret').value = webhookSecret || '';
    $('token-copied').textContent = '';
    $('token-dialog').showModal();
    $('token-value').select();
    $('token-copy').focus();
  }

  async function copyToken() {
    const input = $('token-value');
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (e) {
      input.select();
      document.execCommand('copy');
    }
    $('token-copied').textContent = 'Copied to the clipboard.';
  }

  // --- Roll, copy, delete, personal keys ------------------------------------------------------
  function openRoll(id) {
    clearErrors();
    rolling = keys.get(id);
    $('roll-title').textContent = `Roll ${rolling.name}`;
    $('roll-text').textContent = `A new token replaces ${rolling.hint}. Give the clients ` +
        'using the current one time to switch.';
    $('roll-dialog').showModal();
    $('roll-grace').focus();
  }

  async function submitRoll(ev) {
    ev.preventDefault();
    clearErrors();
    const k = rolling;
    try {
      const rolled = (await api('POST', `${keyPath(k.id)}/roll`,
          {grace_seconds: Number($('roll-grace').value)})).data;
      $('roll-dialog').close();
      replaceRow(rolled.key);
      notice(`Key ${k.name} rolled.`);
      focusRowButton(k.id, 'Roll');
      showToken(rolled.key, rolled.token);
    } catch (e) {
      showError('roll-error', e);
    }
  }

  // A recoverable key's token is read back (the server records it in the audit log). Of a
  // hash-only key, what "Copy API key token" can offer is a roll, and why.
  async function openCopy(id) {
    const k = keys.get(id);
    if (revealing) return;  // one reveal (and one audit entry) per click
    clearErrors();
    rolling = k;
    let why = '';
    if (k.recoverable) {
      revealing = true;
      try {
        const revealed = (await api('POST', `${keyPath(k.id)}/reveal`)).data;
        replaceRow(revealed.key);
        // The row was rebuilt: focus its button, where the dialog returns the focus.
        focusRowButton(k.id, 'Copy token of');
        showToken(revealed.key, revealed.token, true);
        return;
      } catch (e) {
        if (e.status !== 409) {
          notice(`Could not show the token of ${k.name}: ${e.message}`);
          return;
        }
        // 409: the server says why it cannot (hash-only since, or a KEK it has not loaded).
        why = `The server cannot show it: ${e.message}.`;
      } finally {
        revealing = false;
      }
    }
    why = why || (me.recoverable_keys ?
      `The token of ${k.name} (${k.hint}) was issued before recoverable keys were turned on, ` +
        'or by a tool without the key-encryption key, so keygate keeps only its hash.' :
      `keygate keeps only a hash of each token here (recoverable keys are off), so the token ` +
        `of ${k.name} (${k.hint}) cannot be shown or copied after it was created.`);
    $('copy-text').textContent = `${why} Roll the key to get a new token; the current one ` +
        'can keep working for a grace period.';
    $('copy-dialog').showModal();
    $('copy-roll').focus();
  }

  async function revealPersonal() {
    const k = rolling;
    try {
      const revealed = (await api('POST', `${keyPath(k.id)}/reveal`)).data;
      $('personal-dialog').close();
      if (keys.has(k.id)) replaceRow(revealed.key);
      showToken(revealed.key, revealed.token, true);
    } catch (e) {
      showError('personal-error', e);
    }
  }

  function openDelete(id) {
    clearErrors();
    deleting = keys.get(id);
    $('delete-title').textContent = `Delete ${deleting.name}`;
    $('delete-text').textContent = `Delete the key ${deleting.name} (${deleting.id}, owner ` +
        `${deleting.owner})? Its token stops working at once, and this cannot be undone: to ` +
        'stop it for a while, block it instead.';
    $('delete-confirm').value = '';
    $('delete-submit').disabled = true;
    $('delete-dialog').showModal();
    $('delete-confirm').focus();
  }

  async function submitDelete(ev) {
    ev.preventDefault();
    const k = deleting;
    if ($('delete-confirm').value !== k.name) return;
    try {
      await api('DELETE', keyPath(k.id), undefined, ifMatch(k));
      $('delete-dialog').close();
      keys.delete(k.id);
      const row = $(`row-${k.id}`);
      if (row) row.remove();
      $('keys-empty').hidden = keys.size !== 0;
      notice(`Key ${k.name} deleted.`);
      $('search').focus();
    } catch (e) {
      showError('delete-error', e);
    }
  }

  function openPersonal() {
    clearErrors();
    $('p-owner').value = '';
    $('p-environment').value = currentEnv;
    $('personal-result').textContent = '';
    $('personal-reveal').hidden = true;
    $('personal-dialog').showModal();
    $('p-owner').focus();
  }

  async function submitPersonal(ev) {
    ev.preventDefault();
    clearErrors();
    const owner = $('p-owner').value.trim();
    const environment = $('p-environment').value;
    try {
      const r = await api('POST', 'personal-keys', {owner, environment});
      if (r.status === 201) {
        $('personal-dialog').close();
        if (environment === currentEnv) await loadKeys(true);
        notice(`Personal key of ${owner} created.`);
        showToken(r.data.key, r.data.token);
      } else {
        const k = r.data.key || r.data;
        rolling = k;
        $('personal-result').textContent = `${owner} has a personal key in ${environment}: ` +
            `${k.name}, token ${k.hint}, ${k.state === 'active' ? 'active' : 'blocked'}. ` +
            (k.recoverable ? 'Show API key reads its token back (recorded in the audit log).' :
              'Its token was shown once, when it was created; roll the key to get a new one.');
        $('personal-reveal').hidden = !k.recoverable;
        if (k.recoverable) $('personal-reveal').focus();
      }
    } catch (e) {
      showError('personal-error', e);
    }
  }

  // --- The audit log --------------------------------------------------------------------------
  async function loadAudit(fresh) {
    // Only the latest request's answer is shown; "Load more" keeps the filter it was shown for.
    const request = ++auditRequest;
    if (fresh) {
      auditAfter = '';
      auditFilter = $('audit-key').value.trim();
    }
    const q = new URLSearchParams({limit: '100'});
    if (auditFilter) q.set('key_id', auditFilter);
    if (auditAfter) q.set('after', auditAfter);
    try {
      const page = (await api('GET', `audit?${q}`)).data;
      if (request !== auditRequest) return;
      if (fresh) $('audit-body').replaceChildren();
      for (const e of page.events) {
        $('audit-body').append(el('tr', {},
          el('td', {text: String(e.sequence)}), el('td', {text: when(e.at)}),
          el('td', {text: e.type}), el('td', {text: e.actor}),
          el('td', {class: 'mono', text: e.key_id}),
          el('td', {text: (e.changed_fields || []).join(', ')})));
      }
      auditAfter = page.next_after ? String(page.next_after) : '';
      $('audit-more').hidden = !page.more;
    } catch (e) {
      showError('app-error', e);
    }
  }

  // --- Wiring ---------------------------------------------------------------------------------
  function start() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut('Signed out.'));
    $('nav-keys').addEventListener('click', () => {
      showSection('keys');
      loadKeys(true);
    });
    $('nav-audit').addEventListener('click', () => {
      showSection('audit');
      loadAudit(true);
    });
    $('search').addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => loadKeys(true), 250);
    });
    $('search').addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter') return;
      clearTimeout(searchTimer);
      loadKeys(true);
    });
    $('keys-more').addEventListener('click', () => loadKeys(false));
    $('audit-more').addEventListener('click', () => loadAudit(false));
    $('audit-filter').addEventListener('click', () => loadAudit(true));
    $('audit-key').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') loadAudit(true);
    });
    $('create-key').addEventListener('click', () => openKeyDialog(null));
    $('personal-key').addEventListener('click', openPersonal);
    $('key-form').addEventListener('submit', submitKey);
    $('roll-form').addEventListener('submit', submitRoll);
    $('delete-form').addEventListener('submit', submitDelete);
    $('personal-form').addEventListener('submit', submitPersonal);
    $('delete-confirm').addEventListener('input', () => {
      $('delete-submit').disabled = $('delete-confirm').value !== (deleting || {}).name;
    });
    $('token-copy').addEventListener('click', copyToken);
    $('personal-reveal').addEventListener('click', revealPersonal);
    $('copy-roll').addEventListener('click', () => {
      $('copy-dialog').close();
      openRoll(rolling.id);
    });
    // The token leaves the page as soon as its dialog closes.
    $('token-dialog').addEventListener('close', () => {
      $('token-value').value = '';
      $('token-webhook-secret').value = '';
      if (document.activeElement === document.body) $('search').focus();
    });
    for (const b of document.querySelectorAll('[data-close]')) {
      b.addEventListener('click', () => b.closest('dialog').close());
    }
    for (const h of [$('keys-title'), $('audit-title')]) h.tabIndex = -1;
    $('admin-key').focus();
  }

  start();
})();
