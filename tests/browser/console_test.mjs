// The admin console in a real browser: Debian's Chromium, driven by puppeteer-core, against
// `keygate serve` on a fresh SQLite file, with the example server on the same file to show that
// what the console does reaches the keys' users. Every seed flow, keyboard-only where the issue
// asks (sign-in and the create form), recoverable keys (`serve --kek-file`: Copy token and Show
// API key read a token back; a key made without the KEK is explained and offered a roll), a
// key's own webhook secret shown once on creation (`--webhook-secret-per-key`),
// axe-core on every screen, the first load's size and
// origins, and the page's memory after sign-out. Screenshots of each screen go to SHOTS_DIR.
//
//   node console_test.mjs CLI SERVER [SHOTS_DIR]
// Exit: 0 pass, 1 fail, 77 skipped (no Chromium or node_modules; under CI, $CI set, a skip is a
// failure).
import {spawn, spawnSync} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const [cli, server, shotsArg] = process.argv.slice(2);
if (!cli || !server) {
  console.error('usage: node console_test.mjs CLI SERVER [SHOTS_DIR]');
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const inCi = process.env.CI && process.env.CI !== 'false';
function skip(why) {
  if (inCi) {
    console.log(`FAIL: ${why}: CI must run every test (scripts/setup.sh installs it)`);
    process.exit(1);
  }
  console.log(`SKIP: ${why}, so the console's browser test does not run`);
  process.exit(77);
}
const chromium = process.env.KEYGATE_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(chromium)) skip(`no Chromium at ${chromium} (apt-get install chromium)`);
let puppeteer;
let axeSource;
try {
  puppeteer = (await import('puppeteer-core')).default;
  axeSource = fs.readFileSync(path.join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');
} catch (e) {
  skip(`tests/browser/node_modules is missing (run npm ci in tests/browser)`);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'keygate_console.'));
const db = path.join(work, 'keys.db');
const shots = shotsArg || path.join(work, 'shots');
fs.mkdirSync(shots, {recursive: true});
// How long to wait for a state: 5 s, or $KEYGATE_E2E_GRACE_S (sanitized builds are slower).
const graceMs = 1000 * (Number(process.env.KEYGATE_E2E_GRACE_S) || 5);
const env = {...process.env};
delete env.KEYGATE_DB;
delete env.KEYGATE_PEPPER_FILE;

let failed = 0;
function check(cond, what) {
  console.log(`${cond ? 'ok  ' : 'FAIL'}  ${what}`);
  if (!cond) failed++;
  return cond;
}

function kg(args, input) {
  return spawnSync(cli, ['--db', db, ...args], {env, input, encoding: 'utf8'});
}
// Exit status of `keygate verify` for a token (0: valid).
function cliVerify(token, scope) {
  return kg(['verify', '-', ...(scope ? ['--scope', scope] : [])], `${token}\n`).status;
}
function cliCreate(name, owner, scope) {
  const r = kg(['create', '--name', name, '--owner', owner, '--env', 'production',
    '--scope', scope]);
  if (r.status !== 0) throw new Error(`keygate create: ${r.stderr}`);
  return r.stdout.trim().split('\n').pop();
}

// Starts a process that writes its port(s) to a file; resolves with the file's text.
async function startWithPortFile(cmd, args, portFile, logName) {
  const log = fs.openSync(path.join(work, logName), 'w');
  const child = spawn(cmd, args, {env, stdio: ['ignore', log, log]});
  for (let i = 0; i < graceMs / 50; i++) {
    if (fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim()) {
      return {child, text: fs.readFileSync(portFile, 'utf8')};
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${logName}: did not start: ${fs.readFileSync(path.join(work, logName), 'utf8')}`);
}

const children = [];
let browser = null;
async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  fs.rmSync(work, {recursive: true, force: true});
}

try {
  const adminKey = cliCreate('console-admin', 'alice', 'admin');
  cliCreate('billing-worker', 'bob', 'read:all');
  cliCreate('reports', 'bob', 'read:all');

  // Recoverable keys on in the console's server: the keys above, made without the KEK, stay
  // hash-only.
  const kek = path.join(work, 'kek');
  fs.writeFileSync(kek, crypto.randomBytes(32), {mode: 0o600});
  const serve = await startWithPortFile(cli, ['--db', db, '--kek-file', kek,
    '--webhook-secret-per-key', 'serve', '--port',
    '0', '--port-file', path.join(work, 'serve.port')], path.join(work, 'serve.port'),
  'serve.log');
  children.push(serve.child);
  const port = serve.text.trim();
  const origin = `https://localhost:${port}`;
  const srv = await startWithPortFile(server, ['--db', db, '--port', '0', '--http-port', '0',
    '--port-file', path.join(work, 'server.ports')], path.join(work, 'server.ports'),
  'server.log');
  children.push(srv.child);
  const apiPort = /https=(\d+)/.exec(srv.text)[1];
  // What the example server answers the token (the status), polled until `want` or the grace: it
  // follows the database's change feed.
  const serverStatus = async (token, want) => {
    let status = 0;
    for (let i = 0; i < graceMs / 100; i++) {
      const r = spawnSync('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '-H',
        `Authorization: Bearer ${token}`, `https://localhost:${apiPort}/v1/projects`],
      {encoding: 'utf8'});
      status = Number(r.stdout);
      if (status === want) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    return status;
  };

  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    acceptInsecureCerts: true,  // keygate serve's self-signed certificate
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--window-size=1400,900'],
    defaultViewport: {width: 1400, height: 900},
  });
  await browser.defaultBrowserContext().overridePermissions(origin,
      ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
  const page = await browser.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', (d) => {
    problems.push(`unexpected JavaScript dialog: ${d.message()}`);
    d.dismiss();
  });

  // --- First load: size and origins ---------------------------------------------------------
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  const requested = [];
  let bytes = 0;
  cdp.on('Network.requestWillBeSent', (e) => requested.push(e.request.url));
  cdp.on('Network.loadingFinished', (e) => {
    bytes += e.encodedDataLength;
  });
  const response = await page.goto(`${origin}/admin/`, {waitUntil: 'networkidle0'});
  check(response.status() === 200, 'the console loads (200)');
  const csp = response.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe') &&
      csp.includes("require-trusted-types-for 'script'"),
  `strict Content-Security-Policy: ${csp}`);
  check(response.headers()['x-content-type-options'] === 'nosniff' &&
      response.headers()['referrer-policy'] === 'no-referrer', 'nosniff, no-referrer');
  check(bytes > 0 && bytes <= 100 * 1024, `first load: ${bytes} bytes transferred (<= 100 KB)`);
  const foreign = requested.filter((u) => !u.startsWith(`${origin}/`));
  check(foreign.length === 0, `first load: ${requested.length} requests, none to another ` +
      `origin ${foreign.join(' ')}`);
  check(await page.$$eval('script', (s) => s.every((x) => x.src && !x.textContent.trim())),
      'no inline script');

  const axe = async (screen) => {
    await page.evaluate(axeSource);
    const result = await page.evaluate(() =>
      window.axe.run(document, {resultTypes: ['violations']}));
    const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    check(bad.length === 0, `axe-core, ${screen}: no serious violation` +
        bad.map((v) => `\n      ${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(' ')})`)
            .join(''));
  };
  const shot = (name) => page.screenshot({path: path.join(shots, `console-${name}.png`)});
  const active = () => page.evaluate(() => document.activeElement && document.activeElement.id);
  // Presses Tab until the element with `id` (or matching the selector `css`) has the focus, at
  // most 60 times: what a keyboard-only user does.
  const tabTo = async (id, css) => {
    const focused = () => page.evaluate((i, c) => {
      const a = document.activeElement;
      return !!a && (c ? a.matches(c) : a.id === i);
    }, id, css || '');
    for (let i = 0; i < 60; i++) {
      if (await focused()) return true;
      await page.keyboard.press('Tab');
    }
    throw new Error(`Tab never reached ${css || `#${id}`}`);
  };
  const text = (sel) => page.$eval(sel, (e) => e.textContent);
  page.setDefaultTimeout(graceMs);
  const visible = (sel) => page.waitForSelector(sel, {visible: true});
  const hidden = (sel) => page.waitForSelector(sel, {hidden: true});
  const rowOf = async (name) => page.evaluateHandle((n) => [...document.querySelectorAll(
      '#keys-body tr')].find((tr) => tr.querySelector('.name strong').textContent === n) || null,
  name);
  const rowText = async (name) => page.evaluate((n) => {
    const tr = [...document.querySelectorAll('#keys-body tr')]
        .find((r) => r.querySelector('.name strong').textContent === n);
    return tr ? tr.textContent : '';
  }, name);
  const clickLabel = async (label) => {
    const b = await page.$(`button[aria-label="${label}"]`);
    if (!b) throw new Error(`no button "${label}"`);
    await b.click();
  };

  // --- Sign-in, keyboard only ---------------------------------------------------------------
  await axe('sign-in');
  await shot('sign-in');
  check(await active() === 'admin-key', 'the key field has the focus on load');
  await page.keyboard.type('kg_live_not-a-key');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('sign-in-error').textContent !== '');
  check((await text('#sign-in-error')).includes('refused'), 'a wrong key is refused');
  // Chromium logs the refused request (401) as a console error: that one is expected.
  const expected401 = problems.findIndex((p) => p.includes('status of 401'));
  if (expected401 >= 0) problems.splice(expected401, 1);
  await tabTo('admin-key');
  await page.keyboard.type(adminKey);
  await page.keyboard.press('Enter');
  await visible('#app');
  await page.waitForSelector('#keys-body tr');
  check((await text('#who')).includes('alice'), 'signed in as the key\'s owner');
  check(await page.$eval('#admin-key', (e) => e.value) === '', 'the key field is emptied');
  const tabs = await page.$$eval('#env-tabs [role=tab]', (t) => t.map((x) => x.textContent));
  check(tabs.includes('production') && tabs.includes('preview'), `environment tabs: ${tabs}`);
  check((await rowText('billing-worker')).includes('Active'), 'the list shows the keys');
  await axe('key list');
  await shot('keys');

  // --- Environment tabs by keyboard ---------------------------------------------------------
  await tabTo('tab-production');
  await page.keyboard.press('ArrowLeft');
  await page.waitForFunction(() => document.getElementById('keys-empty').hidden === false);
  check(await active() === 'tab-preview', 'arrow keys move between environment tabs');
  await page.keyboard.press('ArrowRight');
  await page.waitForSelector('#keys-body tr');
  check(await active() === 'tab-production', 'and back to production, its keys listed');

  // --- Create, keyboard only ----------------------------------------------------------------
  await tabTo('create-key');
  await page.keyboard.press('Enter');
  await visible('#key-dialog');
  check(await active() === 'f-name', 'the create form opens on its first field');
  await page.keyboard.type('ci-pipeline');
  await tabTo('f-description');
  await page.keyboard.type('Deploys from CI');
  await tabTo('scope-admin');
  await page.keyboard.press('Space');
  check(await page.$eval('#scope-read\\:all', (e) => e.checked && e.disabled),
      'admin checks and locks read:all');
  await page.keyboard.press('Space');  // admin off again
  await tabTo('scope-read:all');
  await page.keyboard.press('Space');
  await tabTo('f-rate');
  await page.keyboard.type('100');
  await tabTo('f-period');
  await page.keyboard.type('60');
  await tabTo('f-webhook');
  await page.keyboard.type('https://hooks.example.com/keygate');
  await tabTo('f-accounts');
  await page.keyboard.type('acct_1, acct_2');
  await tabTo('f-metadata');
  await page.keyboard.type('team=platform');
  await axe('create form');
  await shot('create');
  await tabTo('key-submit');
  await page.keyboard.press('Enter');
  await visible('#token-dialog');
  const token = await page.$eval('#token-value', (e) => e.value);
  check(token.startsWith('kg_live_'), 'the token is shown once after create');
  check((await text('#token-warning')).includes('every time is recorded'),
      'with the warning (recoverable: shown again only on record)');
  check(await active() === 'token-copy', 'the copy button has the focus');
  const webhookSecret = await page.$eval('#token-webhook-secret', (e) => e.value);
  check(webhookSecret.startsWith('whsec_') &&
      !(await page.$eval('#token-webhook', (e) => e.hidden)),
      'a key with a webhook URL shows its own webhook secret once');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('token-copied').textContent !== '');
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === token, 'Copy puts the token on the clipboard');
  await axe('token');
  await shot('token');
  await page.keyboard.press('Escape');
  await hidden('#token-dialog');
  check(await page.$eval('#token-value', (e) => e.value) === '' &&
      await page.$eval('#token-webhook-secret', (e) => e.value) === '',
  'the token and the webhook secret leave the page');
  check(cliVerify(token, 'read:all') === 0, 'the CLI accepts the new token (read:all)');
  check(await serverStatus(token, 200) === 200, 'the example server accepts it');
  const created = JSON.parse(kg(['--json', 'list', '--search', 'ci-pipeline']).stdout);
  const key = (created.keys || created)[0];
  check(key && key.webhook_url === 'https://hooks.example.com/keygate' &&
      key.accounts.join() === 'acct_1,acct_2' && key.metadata.team === 'platform' &&
      key.rate_limit && key.rate_limit.rate === 100, 'every field of the form is stored');

  // --- Search -------------------------------------------------------------------------------
  await page.focus('#search');
  await page.keyboard.type('pipe');
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 1);
  check((await rowText('ci-pipeline')) !== '', 'search by name finds ci-pipeline alone');
  await page.$eval('#search', (e) => {
    e.value = '';
  });
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 4);

  // --- Block (keyboard only), unblock --------------------------------------------------------
  await tabTo('', 'button[aria-label="Block ci-pipeline"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('notice').textContent.includes('blocked'));
  check((await rowText('ci-pipeline')).includes('Blocked') &&
      await page.evaluate(() => !!document.querySelector('#keys-body .dot.blocked')),
  'blocked: the red dot');
  check(await serverStatus(token, 401) === 401, 'the example server refuses the blocked key');
  await shot('blocked');
  await clickLabel('Unblock ci-pipeline');
  await page.waitForFunction(() => document.getElementById('notice').textContent.includes('unblocked'));
  check(await serverStatus(token, 200) === 200, 'unblocked: accepted again');

  // --- Modify the scopes --------------------------------------------------------------------
  await clickLabel('Modify ci-pipeline');
  await visible('#key-dialog');
  check(await page.$eval('#f-webhook', (e) => e.value) === 'https://hooks.example.com/keygate',
      'the modify form holds the key\'s fields');
  await page.click('#scope-read\\:all');
  await page.click('#scope-write\\:all');
  await page.click('#key-submit');
  await hidden('#key-dialog');
  await page.waitForFunction(() => document.getElementById('notice').textContent.includes('saved'));
  check((await rowText('ci-pipeline')).includes('write:all'), 'modified: the list shows write:all');
  check(cliVerify(token, 'write:all') === 0 && cliVerify(token, 'read:all') === 1,
      'the CLI sees the new scopes');

  // --- Copy token: read back from a recoverable key -----------------------------------------
  await clickLabel('Copy token of ci-pipeline');
  await visible('#token-dialog');
  check(await page.$eval('#token-value', (e) => e.value) === token,
      'Copy token of a recoverable key shows its token');
  check((await text('#token-title')) === 'Token of ci-pipeline', 'titled as a shown token');
  await page.keyboard.press('Enter');  // the copy button has the focus
  await page.waitForFunction(() => document.getElementById('token-copied').textContent !== '');
  check(await page.evaluate(() => navigator.clipboard.readText()) === token,
      'and copies it to the clipboard');
  await page.keyboard.press('Escape');
  await hidden('#token-dialog');

  // --- Copy token of a key kept only as a hash: a roll is offered ---------------------------
  await clickLabel('Copy token of billing-worker');
  await visible('#copy-dialog');
  check((await text('#copy-text')).includes('only its hash'), 'Copy token explains why it cannot');
  await axe('copy token');
  await shot('copy');
  await page.click('#copy-dialog [data-close]');
  await hidden('#copy-dialog');

  // --- Roll ---------------------------------------------------------------------------------
  await clickLabel('Roll ci-pipeline');
  await visible('#roll-dialog');
  await page.select('#roll-grace', '0');
  await shot('roll');
  await page.click('#roll-form button[type=submit]');
  await visible('#token-dialog');
  const rolled = await page.$eval('#token-value', (e) => e.value);
  check(rolled.startsWith('kg_live_') && rolled !== token, 'roll shows a new token');
  await page.click('#token-dialog [data-close]');
  await hidden('#token-dialog');
  check(cliVerify(rolled, 'write:all') === 0 && cliVerify(token, 'write:all') === 1,
      'the new token works, the old one (no grace) does not');
  await clickLabel('Copy token of ci-pipeline');
  await visible('#token-dialog');
  check(await page.$eval('#token-value', (e) => e.value) === rolled,
      'after the roll, Copy token shows the new token');
  await page.click('#token-dialog [data-close]');
  await hidden('#token-dialog');

  // --- Personal key -------------------------------------------------------------------------
  await page.click('#personal-key');
  await visible('#personal-dialog');
  await page.type('#p-owner', 'carol');
  await page.click('#personal-form button[type=submit]');
  await visible('#token-dialog');
  const personal = await page.$eval('#token-value', (e) => e.value);
  await page.click('#token-dialog [data-close]');
  check(cliVerify(personal) === 0, 'a personal key for carol, its token shown once');
  await page.click('#personal-key');
  await page.type('#p-owner', 'carol');
  await page.click('#personal-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('personal-result').textContent !== '');
  check((await text('#personal-result')).includes('has a personal key'),
      'asked again: the existing key, without its token');
  await axe('personal key');
  await shot('personal');
  check(await active() === 'personal-reveal', 'Show API key is offered, with the focus');
  await page.keyboard.press('Enter');
  await visible('#token-dialog');
  check(await page.$eval('#token-value', (e) => e.value) === personal,
      'Show API key shows the personal key\'s token');
  await page.click('#token-dialog [data-close]');
  await hidden('#token-dialog');

  // --- Delete behind a confirmation, keyboard only -----------------------------------------
  await page.focus('#search');
  await tabTo('', 'button[aria-label="Delete ci-pipeline"]');
  await page.keyboard.press('Enter');
  await visible('#delete-dialog');
  check((await text('#delete-text')).includes('ci-pipeline'), 'the confirmation names the key');
  check(await active() === 'delete-confirm', 'the confirmation field has the focus');
  await page.keyboard.type('ci-pipelin');
  check(await page.$eval('#delete-submit', (e) => e.disabled), 'a wrong name: delete disabled');
  await page.keyboard.press('Enter');  // refused: nothing happens
  check(await page.$eval('#delete-dialog', (e) => e.open), 'Enter with a wrong name deletes nothing');
  await page.keyboard.type('e');
  check(!(await page.$eval('#delete-submit', (e) => e.disabled)), 'the name: delete enabled');
  await axe('delete');
  await shot('delete');
  await tabTo('delete-submit');
  await page.keyboard.press('Enter');
  await hidden('#delete-dialog');
  await page.waitForFunction(() => document.getElementById('notice').textContent.includes('deleted'));
  check(!(await rowOf('ci-pipeline')).asElement(), 'deleted: gone from the list');
  check(cliVerify(rolled) === 1, 'the CLI no longer knows its token');

  // --- Audit log ----------------------------------------------------------------------------
  await page.click('#nav-audit');
  await page.waitForSelector('#audit-body tr');
  const events = await page.$$eval('#audit-body tr', (rows) => rows.map((r) =>
    [...r.children].map((c) => c.textContent)));
  const ofKey = events.filter((e) => e[4] === key.id).map((e) => e[2]);
  check(['created', 'revoked', 'restored', 'modified', 'revealed', 'rolled', 'deleted']
      .every((t) => ofKey.includes(t)), `the audit log has the key's history: ${ofKey}`);
  check(events.filter((e) => e[4] === key.id && e[2] !== 'created').every((e) => e[3] === 'alice'),
      'every change through the console names its admin as the actor');
  await axe('audit log');
  await shot('audit');

  // --- Sign out: nothing of the key is left -------------------------------------------------
  await page.click('#sign-out');
  await visible('#sign-in');
  const left = await page.evaluate((k) => ({
    html: document.documentElement.outerHTML.includes(k),
    url: location.href.includes(k),
    cookie: document.cookie,
    local: localStorage.length,
    session: sessionStorage.length,
  }), adminKey);
  check(!left.html && !left.url && left.cookie === '' && left.local === 0 && left.session === 0,
      'after sign-out: the key is in no page text, URL, cookie or storage');
  check(problems.length === 0, `no console error, CSP report or page error ${problems.join('; ')}`);
} catch (e) {
  check(false, `the run stopped: ${e.stack || e}`);
} finally {
  await cleanup();
}
console.log(failed ? `${failed} check(s) failed` : 'all checks passed');
process.exit(failed ? 1 : 0);
