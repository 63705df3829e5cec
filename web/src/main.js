// The Stance dashboard: a single page over the REST API. Hash routes: #/ (workloads) and
// #/w/NAME (one workload). The token is asked once and kept in sessionStorage.
import { call, token, setToken, forgetToken, enc, ApiError } from './api.js';
import { drawGraph, filterKinds, search } from './graph.js';
import './style.css';

const $ = (sel) => document.querySelector(sel);
const DOMAINS = ['process', 'file', 'network', 'capabilities'];
const FEED_EVERY_MS = 1500;

let current = null; // { name, graph, cy }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

// ---- token ------------------------------------------------------------------------------------

function askToken(message = '') {
  $('#token-error').textContent = message;
  const dialog = $('#token-dialog');
  if (!dialog.open) dialog.showModal();
}

$('#token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  setToken($('#token-input').value.trim());
  try {
    await call('/status');
    $('#token-dialog').close();
    $('#token-input').value = '';
    start();
  } catch (e) {
    forgetToken();
    askToken(e.message);
  }
});

$('#logout').addEventListener('click', () => {
  forgetToken();
  location.hash = '#/';
  location.reload();
});

// Every failed call goes through here: a 401 asks for the token again.
function failed(e, where) {
  if (e instanceof ApiError && e.status === 401) {
    forgetToken();
    askToken(e.message);
    return;
  }
  if (where) where.textContent = e.message;
  console.error(e);
}

// ---- workloads --------------------------------------------------------------------------------

function modesText(modes) {
  const values = DOMAINS.map((d) => modes[d]);
  if (values.every((m) => m === values[0])) return values[0];
  return DOMAINS.map((d) => `${d}=${modes[d]}`).join(' ');
}

function readinessText(w) {
  const r = w.readiness;
  if (!r) return '–';
  if (typeof r === 'string') return r;
  const state = r.ready ? 'ready' : 'learning';
  return r.reason ? `${state}: ${r.reason}` : state;
}

async function showWorkloads() {
  $('#workloads-view').hidden = false;
  $('#workload-view').hidden = true;
  const tbody = $('#workloads tbody');
  try {
    const list = await call('/workloads');
    tbody.replaceChildren(
      ...list.map((w) =>
        el(
          'tr',
          { 'data-workload': w.name },
          el('td', {}, el('a', { href: `#/w/${enc(w.name)}` }, w.name)),
          el('td', {}, w.kind),
          el('td', { class: 'modes' }, modesText(w.modes)),
          el('td', { class: 'readiness' }, readinessText(w)),
          el('td', { class: 'num' }, w.edges),
          el('td', { class: w.losses.total ? 'num warning' : 'num', title: w.warnings.join('\n') }, w.losses.total),
          el('td', {}, w.last_seen),
        ),
      ),
    );
  } catch (e) {
    failed(e, tbody);
  }
}

// ---- one workload -----------------------------------------------------------------------------

async function showWorkload(name) {
  $('#workloads-view').hidden = true;
  $('#workload-view').hidden = false;
  $('#wl-name').textContent = name;
  $('#evidence').replaceChildren(el('p', { class: 'muted' }, 'Click a node or an edge to see its evidence.'));
  try {
    const [w, graph] = await Promise.all([call(`/workloads/${enc(name)}`), call(`/workloads/${enc(name)}/graph`)]);
    $('#wl-kind').textContent = w.kind;
    $('#wl-warnings').textContent = w.warnings.join(' ');
    $('#wl-readiness').textContent = `Readiness: ${readinessText(w)}`;
    renderModes(w.modes);
    current?.cy?.destroy();
    const cy = drawGraph($('#graph'), graph, showEvidence);
    current = { name, graph, cy };
    // For tests and for the browser console: the graph as drawn.
    window.stance = { cy };
    applyFilters();
    $('#graph-count').textContent = `${graph.nodes.length} nodes, ${graph.edges.length} edges`;
  } catch (e) {
    failed(e, $('#wl-warnings'));
    return;
  }
  loadPolicy();
  loadVersions();
  loadProposals();
}

function renderModes(modes) {
  $('#wl-modes').replaceChildren(
    ...DOMAINS.map((d) => el('span', { class: `mode mode-${modes[d]}`, 'data-domain': d }, `${d}: ${modes[d]}`)),
  );
}

function applyFilters() {
  if (!current) return;
  // A domain's box may stand for several edge kinds (process: exec and ptrace), space-separated.
  const kinds = new Set(
    [...document.querySelectorAll('.domain-filter')].filter((c) => c.checked).flatMap((c) => c.value.split(' ')),
  );
  filterKinds(current.cy, kinds);
  search(current.cy, $('#graph-search').value);
}
document.querySelectorAll('.domain-filter').forEach((c) => c.addEventListener('change', applyFilters));
$('#graph-search').addEventListener('input', applyFilters);

function showEvidence(what, item, graph) {
  const rows = [];
  if (what === 'node') {
    rows.push(['node', `${item.kind}: ${item.label}`]);
    if (item.argv) rows.push(['argv', item.argv]);
    if (item.dev !== undefined) rows.push(['dev / inode', `${item.dev} / ${item.ino}`]);
    rows.push(['first seen', item.first_seen], ['last seen', item.last_seen]);
    const touching = graph.edges.filter((e) => e.source === item.id || e.target === item.id);
    rows.push(['edges', touching.length]);
    rows.push(['count', touching.reduce((s, e) => s + e.count, 0)]);
    const actors = [...new Set(touching.filter((e) => e.target === item.id).map((e) => e.actor))];
    if (actors.length) rows.push(['executables', actors.join(', ')]);
  } else {
    rows.push(['edge', `${item.kind}: ${item.source_label} → ${item.target_label}`]);
    rows.push(['executable', item.actor]);
    if (item.access) rows.push(['access', item.access]);
    rows.push(['result', item.result], ['count', item.count]);
    rows.push(['first seen', item.first_seen], ['last seen', item.last_seen]);
  }
  $('#evidence').replaceChildren(
    el('table', { class: 'evidence' }, ...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v)))),
  );
}

// ---- policy, versions, proposals --------------------------------------------------------------

let policyText = '';

async function loadPolicy() {
  const format = $('#policy-format').value;
  const pre = $('#policy-text');
  try {
    const p = await call(`/workloads/${enc(current.name)}/policy?format=${enc(format)}`);
    policyText = p.content;
    pre.textContent = policyText;
    // A GET never stores a version: before the first one, the recommendation is shown unsaved.
    $('#policy-version').textContent =
      p.version === null ? 'not stored yet: the recommendation as it is now' : `version ${p.version}`;
  } catch (e) {
    policyText = '';
    failed(e, pre);
  }
}

// Stores the recommendation of the behaviour as it is now (a new version only if it changed).
$('#policy-recommend').addEventListener('click', async () => {
  try {
    const r = await call(`/workloads/${enc(current.name)}/policy/versions`, { method: 'POST' });
    $('#policy-version').textContent = r.created ? `stored version ${r.version}` : `version ${r.version} still holds`;
    loadPolicy();
    loadVersions();
    loadProposals();
  } catch (e) {
    failed(e, $('#policy-version'));
  }
});
$('#policy-format').addEventListener('change', loadPolicy);

$('#policy-copy').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(policyText);
    $('#policy-copy').textContent = 'Copied';
  } catch {
    // Clipboard needs a secure context; select the text so the person can copy it.
    const range = document.createRange();
    range.selectNodeContents($('#policy-text'));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
  }
  setTimeout(() => ($('#policy-copy').textContent = 'Copy'), 1500);
});

$('#policy-download').addEventListener('click', () => {
  const format = $('#policy-format').value;
  const ext = format === 'native' ? 'json' : 'yaml';
  const url = URL.createObjectURL(new Blob([policyText], { type: 'text/plain' }));
  const a = el('a', { href: url, download: `${current.name}-${format}.${ext}` });
  a.click();
  URL.revokeObjectURL(url);
});

async function loadVersions() {
  try {
    const versions = await call(`/workloads/${enc(current.name)}/policy/versions`);
    const opts = () =>
      versions.map((v) => el('option', { value: v.version }, `v${v.version} ${v.origin} ${v.created_at}`));
    $('#diff-from').replaceChildren(...opts());
    $('#diff-to').replaceChildren(...opts());
    if (versions.length > 1) $('#diff-from').value = versions[versions.length - 2].version;
    if (versions.length) $('#diff-to').value = versions[versions.length - 1].version;
    $('#diff-text').textContent = versions.length ? '' : 'no versions yet';
  } catch (e) {
    failed(e, $('#diff-text'));
  }
}

$('#diff-show').addEventListener('click', async () => {
  const from = $('#diff-from').value;
  const to = $('#diff-to').value;
  try {
    const d = await call(`/workloads/${enc(current.name)}/policy/diff?from=${enc(from)}&to=${enc(to)}`);
    const lines = [
      `version ${d.from} → ${d.to}`,
      ...d.removed.map((r) => `- ${r.id}  ${r.text}`),
      ...d.added.map((r) => `+ ${r.id}  ${r.text}`),
    ];
    if (!d.added.length && !d.removed.length) lines.push('no change');
    $('#diff-text').textContent = lines.join('\n');
  } catch (e) {
    failed(e, $('#diff-text'));
  }
});

async function loadProposals() {
  const ul = $('#proposals');
  try {
    const proposals = await call(`/workloads/${enc(current.name)}/proposals`);
    if (!proposals.length) {
      ul.replaceChildren(el('li', { class: 'muted' }, 'no proposals'));
      return;
    }
    ul.replaceChildren(
      ...proposals.map((p) =>
        el(
          'li',
          { 'data-proposal': p.id, title: `${p.evidence.hits} event(s), last ${p.evidence.last_seen}` },
          el('code', {}, p.text),
          ' ',
          el('button', { class: 'accept', onclick: () => accept(p.id) }, 'Accept'),
        ),
      ),
    );
  } catch (e) {
    // 409: the behaviour changed since the latest version; "Store recommendation" first.
    failed(e, ul);
  }
}
$('#proposals-refresh').addEventListener('click', () => loadProposals());

// The outcome goes to its own line: the policy pane's version line is rewritten when the policy
// reloads, and the proposal list when it refreshes.
async function accept(id) {
  const status = $('#proposals-status');
  status.textContent = `accepting ${id}…`;
  try {
    const a = await call(`/workloads/${enc(current.name)}/proposals/${enc(id)}/accept`, { method: 'POST' });
    status.textContent = `accepted ${a.rule.text} into version ${a.version}`;
    await loadVersions();
    loadProposals();
    loadPolicy();
  } catch (e) {
    failed(e, status);
  }
}

// ---- modes ------------------------------------------------------------------------------------

function chosenDomains() {
  const picked = [...$('#mode-domains').selectedOptions].map((o) => o.value).filter(Boolean);
  return picked;
}

// Before enforce: what the policy would deny of the stored behaviour (replay), and a confirmation.
// Enforce stays disabled until the replay has answered.
async function confirmEnforce() {
  const body = $('#confirm-body');
  const ok = $('#confirm-ok');
  ok.disabled = true;
  body.replaceChildren(el('p', {}, 'Replaying the stored behaviour against the policy…'));
  const dialog = $('#confirm-dialog');
  dialog.returnValue = '';
  dialog.showModal();
  try {
    const check = await call(`/workloads/${enc(current.name)}/policy/check`);
    const which = check.version === null ? 'The first recommended policy' : `Policy version ${check.version}`;
    const denied = check.denied;
    body.replaceChildren(
      el(
        'p',
        { id: 'replay-summary' },
        denied.length
          ? `${which} would deny ${denied.length} of ${check.checked} observed actions:`
          : `${which} denies none of the ${check.checked} observed actions.`,
      ),
      el(
        'ul',
        { id: 'replay-denials' },
        ...denied
          .slice(0, 50)
          .map((d) => el('li', {}, `${d.domain}: ${d.actor} → ${d.object} ${d.access} (${d.hits}×, last ${d.last_seen})`)),
      ),
      denied.length > 50 ? el('p', { class: 'muted' }, `and ${denied.length - 50} more`) : '',
    );
  } catch (e) {
    body.replaceChildren(el('p', { class: 'warning' }, `Replay unavailable: ${e.message}`));
  }
  ok.disabled = false;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

async function setMode(mode) {
  if (mode === 'enforce' && !(await confirmEnforce())) return;
  try {
    const reply = await call(`/workloads/${enc(current.name)}/mode`, {
      method: 'PUT',
      body: { mode, domains: chosenDomains() },
    });
    renderModes(reply.modes);
    $('#mode-result').textContent = reply.revision ? `policy revision ${reply.revision} loaded` : 'no policy loaded';
  } catch (e) {
    failed(e, $('#mode-result'));
  }
}
document.querySelectorAll('.mode-bar button[data-mode]').forEach((b) =>
  b.addEventListener('click', () => setMode(b.dataset.mode)),
);

// ---- live feed --------------------------------------------------------------------------------

async function refreshFeed() {
  if (!token()) return;
  try {
    const page = await call('/events?limit=50');
    $('#feed tbody').replaceChildren(
      ...page.events.map((e) =>
        el(
          'tr',
          { class: `event-${e.kind}`, 'data-kind': e.kind },
          el('td', {}, e.at),
          el('td', {}, e.workload ?? '(unattributed)'),
          el('td', {}, e.kind),
          el('td', {}, e.domain ?? ''),
          el('td', {}, e.kind === 'loss' ? `${e.count} lost: ${e.reason}` : e.object),
          el('td', {}, e.actor ?? ''),
        ),
      ),
    );
  } catch (e) {
    failed(e);
  }
}

async function refreshStatus() {
  try {
    const s = await call('/status');
    const enforceable = s.enforcement.filter((d) => d.available).map((d) => d.domain);
    $('#host-status').textContent = `enforceable here: ${enforceable.join(', ') || 'none'}`;
  } catch (e) {
    failed(e);
  }
}

// ---- routing ----------------------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/w\/(.+)$/);
  if (m) showWorkload(decodeURIComponent(m[1]));
  else showWorkloads();
}

let started = false;
function start() {
  $('#logout').hidden = false;
  refreshStatus();
  route();
  refreshFeed();
  if (!started) {
    started = true;
    window.addEventListener('hashchange', route);
    setInterval(refreshFeed, FEED_EVERY_MS);
  }
}

if (token()) start();
else askToken();
