// The dashboard in real headless Chromium against the real daemon (run as root; `make browser-tests`).
//
// Starts `stance run` on a temporary database, observes a real workload (`stance launch`), then in
// the browser: enters the token, opens the workload, sees its graph's nodes, switches its network
// domain to audit, makes the workload connect to a port its policy has never seen, and waits for the
// would-deny in the live feed. Then the review flow: the would-deny's proposal is accepted from the
// dashboard, the version diff shows the adopted rule, and Enforce first shows what the policy would
// deny of the recorded behaviour (replay) and, cancelled, changes nothing. Screenshots are kept
// under target/browser/.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// playwright-core is a dependency of web/ (package-lock.json): resolve it from there.
const { chromium } = createRequire(path.join(repo, 'web/package.json'))('playwright-core');

const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target');
const STANCE = process.env.STANCE_BIN ?? path.join(targetDir, 'release/stance');
const ARTIFACTS = path.join(targetDir, 'browser');
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function check(cond, message) {
  if (!cond) throw new Error(message);
}

// Starts the daemon and resolves once it printed its API line.
function startDaemon(dir) {
  const pinDir = `/sys/fs/bpf/stance-browser-${process.pid}`;
  const config = path.join(dir, 'stance.toml');
  writeFileSync(
    config,
    [
      `control_socket = "${dir}/control.sock"`,
      `pin_dir = "${pinDir}"`,
      'listen = "127.0.0.1:0"',
      `web_dir = "${repo}/web/dist"`,
      'flush_interval_ms = 200',
      '',
    ].join('\n'),
  );
  const child = spawn(STANCE, ['run', '--db', path.join(dir, 'stance.db'), '--config', config], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon not ready: ${lines.join('\n')}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`daemon exited ${code}: ${lines.join('\n')}`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line);
      console.log(`[daemon] ${line}`);
      const m = line.match(/api: listening on (\S+) \(token in (.+)\)$/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, pinDir, url: m[1], token: readFileSync(m[2], 'utf8').trim() });
      }
    });
  });
}

async function api(d, p, init = {}) {
  const resp = await fetch(`${d.url}/api/v1${p}`, {
    ...init,
    headers: { Authorization: `Bearer ${d.token}`, 'Content-Type': 'application/json' },
  });
  return { status: resp.status, body: await resp.json() };
}

async function until(what, fn, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'stance-browser-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const workload = `t-browser-${process.pid}`;
  const d = await startDaemon(dir);
  let browser;
  let page;
  try {
    execFileSync(STANCE, ['launch', '--workload', workload, '--', '/bin/cat', '/etc/hostname'], { stdio: 'ignore' });
    await until('the workload in the graph', async () => {
      const { status, body } = await api(d, `/workloads/${workload}/graph`);
      return status === 200 && body.nodes.some((n) => n.label === '/etc/hostname');
    });

    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_FLAGS });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
    await page.goto(d.url);

    // The token, once: it is kept for the session.
    await page.locator('#token-dialog').waitFor({ state: 'visible' });
    await page.fill('#token-input', 'wrong-token');
    await page.click('#token-submit');
    await page.locator('#token-error', { hasText: 'wrong API token' }).waitFor();
    await page.fill('#token-input', d.token);
    await page.click('#token-submit');
    await page.locator('#token-dialog').waitFor({ state: 'hidden' });
    check((await page.evaluate(() => sessionStorage.getItem('stance-token'))) === d.token, 'token not kept');

    // The workload list, then the workload's graph.
    const row = page.locator(`tr[data-workload="${workload}"]`);
    await row.waitFor();
    // Readiness with its reason, as the API (and `stance workloads`) say.
    const listed = (await api(d, `/workloads/${workload}`)).body.readiness;
    const readiness = await row.locator('td.readiness').textContent();
    check(
      readiness === `${listed.ready ? 'ready' : 'learning'}: ${listed.reason}`,
      `readiness column '${readiness}' vs ${JSON.stringify(listed)}`,
    );
    await row.locator('a').click();
    await page.locator('#graph-count', { hasText: 'nodes' }).waitFor();
    const labels = await page.evaluate(() => window.stance.cy.nodes().map((n) => n.data('item').label));
    for (const want of [workload, '/usr/bin/cat', '/etc/hostname']) {
      check(labels.includes(want), `graph lacks ${want}: ${labels}`);
    }
    const drawn = await page.evaluate(() => window.stance.cy.nodes().filter((n) => n.visible()).length);
    check(drawn >= 3, `only ${drawn} nodes drawn`);
    // Ptrace edges (observed where fexit or BPF-LSM loads, so never on this host) belong to the
    // process domain's filter: hidden with it, shown with it. One is added to the drawn graph.
    await page.evaluate(() => {
      const cy = window.stance.cy;
      const wl = cy.nodes().filter((n) => n.data('kind') === 'workload')[0];
      const cat = cy.nodes().filter((n) => n.data('item').label === '/usr/bin/cat')[0];
      cy.add({ group: 'edges', data: { id: 'test-ptrace', source: cat.id(), target: wl.id(), kind: 'ptrace', item: {} } });
    });
    const ptraceHidden = () => page.evaluate(() => window.stance.cy.getElementById('test-ptrace').hasClass('hidden'));
    const processBox = page.locator('.domain-filter[value="exec ptrace"]');
    await processBox.uncheck();
    check(await ptraceHidden(), 'a ptrace edge stays drawn with the process domain filtered out');
    await processBox.check();
    check(!(await ptraceHidden()), 'a ptrace edge is hidden with the process domain shown');
    // Click a node: its evidence.
    await page.evaluate(() => window.stance.cy.nodes().filter((n) => n.data('item').label === '/etc/hostname').emit('tap'));
    await page.locator('#evidence', { hasText: 'first seen' }).waitFor();

    // Audit the network domain (the one this host can enforce without BPF-LSM).
    await page.selectOption('#mode-domains', ['network']);
    await page.click('#mode-audit');
    await page.locator('#wl-modes [data-domain="network"]', { hasText: 'audit' }).waitFor();

    // A connect to a port the workload never used: allowed (audit) and reported.
    const server = net.createServer((s) => s.end());
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const port = server.address().port;
    const py = `import socket\nsocket.create_connection(('127.0.0.1', ${port}), timeout=5)\nprint('connected')`;
    const out = execFileSync(STANCE, ['launch', '--workload', workload, '--', '/usr/bin/python3', '-c', py]).toString();
    check(out.trim() === 'connected', `audit must let the connect through: ${out}`);
    server.close();
    const event = page.locator('#feed tr[data-kind="would-deny"]', { hasText: `127.0.0.1:${port}/tcp` });
    await event.waitFor({ timeout: 15_000 });
    check((await event.textContent()).includes(workload), 'would-deny names the workload');

    const shot = path.join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`browser test: screenshot in ${shot}`);

    // The would-deny is proposed as an addition; accept it from the dashboard.
    const proposal = page.locator('#proposals li[data-proposal]', { hasText: '127.0.0.1' });
    await until('the proposal in the dashboard', async () => {
      await page.click('#proposals-refresh');
      await page.waitForTimeout(300);
      return (await proposal.count()) > 0;
    });
    const id = await proposal.first().getAttribute('data-proposal');
    const before = (await api(d, `/workloads/${workload}/policy/versions`)).body;
    check(before.length >= 1, `audit stores a version first: ${JSON.stringify(before)}`);
    await proposal.first().locator('button.accept').click();
    await page.locator('#proposals-status', { hasText: 'accepted' }).waitFor();
    const after = (await api(d, `/workloads/${workload}/policy/versions`)).body;
    check(after.length === before.length + 1, `accept stores one version: ${JSON.stringify(after)}`);
    check(after[after.length - 1].origin === 'accept', `the new version is an accept: ${JSON.stringify(after)}`);
    await page.locator(`#proposals li[data-proposal="${id}"]`).waitFor({ state: 'detached' });

    // The diff between the last two versions is the adopted rule.
    const [older, newer] = [before[before.length - 1].version, after[after.length - 1].version];
    await until('the new version in the diff selectors', async () =>
      (await page.locator(`#diff-to option[value="${newer}"]`).count()) > 0,
    );
    await page.selectOption('#diff-from', String(older));
    await page.selectOption('#diff-to', String(newer));
    await page.click('#diff-show');
    const diff = page.locator('#diff-text');
    await diff.filter({ hasText: `+ ${id}` }).waitFor();
    const diffText = await diff.textContent();
    check(diffText.includes('127.0.0.1') && !diffText.includes('\n- '), `diff: ${diffText}`);

    // Enforce asks first, with what the policy would deny of the recorded behaviour: python3 ran
    // only after the version audit stored, so the replay denies it.
    const replay = (await api(d, `/workloads/${workload}/policy/check`)).body;
    check(replay.version === newer, `replay of the latest version: ${JSON.stringify(replay)}`);
    check(replay.denied.some((x) => x.object.includes('python3')), `replay denies python3: ${JSON.stringify(replay)}`);
    await page.click('#mode-enforce');
    await page.locator('#replay-summary').waitFor();
    const summary = await page.locator('#replay-summary').textContent();
    check(
      summary.includes(`would deny ${replay.denied.length} of ${replay.checked}`),
      `confirmation shows the replay: ${summary}`,
    );
    const items = await page.locator('#replay-denials li').allTextContents();
    check(items.length === Math.min(50, replay.denied.length), `${items.length} denials listed`);
    check(items.some((t) => t.includes('python3')), `denials listed: ${items.join(' | ')}`);
    check(!(await page.locator('#confirm-ok').isDisabled()), 'enforce is offered once the replay answered');
    await page.screenshot({ path: path.join(ARTIFACTS, 'enforce-confirm.png'), fullPage: true });
    await page.click('#confirm-cancel');
    await page.locator('#confirm-dialog').waitFor({ state: 'hidden' });
    const modes = (await api(d, `/workloads/${workload}`)).body.modes;
    check(modes.network === 'audit', `cancelled enforce changed nothing: ${JSON.stringify(modes)}`);

    const back = await api(d, `/workloads/${workload}/mode`, { method: 'PUT', body: JSON.stringify({ mode: 'observe' }) });
    check(back.status === 200, `back to observe: ${JSON.stringify(back.body)}`);
  } catch (e) {
    // What the page showed when it failed: a screenshot and the review pane's lines.
    if (page) {
      await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true }).catch(() => {});
      for (const sel of ['#policy-version', '#proposals-status', '#proposals', '#diff-text']) {
        const text = await page.locator(sel).textContent().catch(() => '(none)');
        console.error(`${sel}: ${text}`);
      }
    }
    throw e;
  } finally {
    await browser?.close();
    d.child.kill('SIGTERM');
    await new Promise((r) => d.child.once('exit', r));
    rmSync(d.pinDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => console.log('browser: 1 passed, 0 failed'),
  (e) => {
    console.error(e);
    console.log('browser: 0 passed, 1 failed');
    process.exit(1);
  },
);
