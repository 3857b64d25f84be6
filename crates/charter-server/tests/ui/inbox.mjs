// Drives the inbox of a seeded store (thousands of events, escalations and approvals) in
// Debian's headless Chromium, by keyboard only:
//  - the tabs show the true totals given on the command line, and the list pages;
//  - j/k move the selection; `a` then Enter approves, `r` + reason + Enter rejects, `d`
//    then Tab to Decide and Enter decides; after each the next item is selected;
//  - a dead letter is dismissed with a reason;
//  - a new approval appears within 5 s without a reload (the test sends it when this
//    script prints `NEED_NEW_APPROVAL` and answers on stdin);
//  - axe-core finds no critical or serious violation on any page, light and dark;
//  - no page scrolls sideways at 390 px.
// Saves inbox-desktop.png, inbox-phone.png and inbox-dark.png into <outdir>, prints one
// JSON line (the summary) last on stdout. Any failure exits non-zero with the reason.
//
// usage: node inbox.mjs <base_url> <token> <outdir> <expected-json>

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
const axePath = require.resolve('axe-core/axe.min.js');

const [base, token, outdir, expectedJson] = process.argv.slice(2);
if (!base || !token || !outdir || !expectedJson) {
  console.error('usage: node inbox.mjs <base_url> <token> <outdir> <expected-json>');
  process.exit(2);
}
const expected = JSON.parse(expectedJson);
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
mkdirSync(outdir, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'charter-inbox-profile-'));
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

function fail(msg) {
  throw new Error(msg);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  // axe-core is injected as a script: the page's CSP (scripts from 'self' only) would
  // refuse it, so the test context bypasses CSP (the app's own script needs no bypass).
  bypassCSP: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync'],
});
const summary = { axe: {}, overflow: {} };
let code = 0;

async function count(page, tab) {
  const t = await page.locator(`.tabs [data-count="${tab}"]`).innerText();
  return Number(t.trim());
}

async function selected(page) {
  return page.locator('tr.selected').getAttribute('data-item');
}

async function flash(page) {
  return page.locator('.flash').innerText();
}

async function axe(page, name) {
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const bad = result.filter((v) => v.impact === 'critical' || v.impact === 'serious');
  summary.axe[name] = { violations: result.length, critical_or_serious: bad.length };
  if (bad.length) fail(`axe on ${name}: ${JSON.stringify(bad)}`);
}

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/login`);
  await axe(page, 'login');
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(/\/inbox/), page.click('button[type=submit]')]);

  // True totals, and paging.
  for (const tab of ['approvals', 'decisions', 'dead']) {
    const n = await count(page, tab);
    if (n !== expected[tab]) fail(`the ${tab} tab shows ${n}, the store holds ${expected[tab]}`);
  }
  const rowsOnFirst = await page.locator('tr[data-item]').count();
  if (rowsOnFirst !== 50) fail(`the first page lists ${rowsOnFirst} rows, not 50`);
  const firstIds = await page.locator('tr[data-item]').evaluateAll((rs) => rs.map((r) => r.dataset.item));
  await Promise.all([page.waitForURL(/cursor=/), page.click('a[rel=next]')]);
  const secondIds = await page.locator('tr[data-item]').evaluateAll((rs) => rs.map((r) => r.dataset.item));
  if (secondIds.length !== 50 || secondIds.some((id) => firstIds.includes(id))) {
    fail('the second page repeats rows of the first or is short');
  }
  summary.pages = { first: firstIds.length, second: secondIds.length };
  await page.screenshot({ path: join(outdir, 'inbox-desktop.png'), fullPage: false });

  // Keyboard only: j/k, approve, reject.
  await page.goto(`${base}/inbox?tab=approvals`);
  const first = await selected(page);
  await page.keyboard.press('j');
  await page.waitForURL((u) => !u.href.includes(`item=${first}`) && u.href.includes('item='));
  const second = await selected(page);
  if (second === first) fail('j did not move the selection');
  await page.keyboard.press('k');
  await page.waitForURL(new RegExp(`item=${first}`));
  await page.keyboard.press('a');
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  if (focused !== 'Approve') fail(`a focused ${focused}, not the Approve button`);
  const focusRing = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  if (focusRing === 'none') fail('the focused button shows no focus ring');
  await Promise.all([page.waitForURL(/msg=approved/), page.keyboard.press('Enter')]);
  if (!(await flash(page)).includes('Approved')) fail('no confirmation after approving');
  if ((await selected(page)) !== second) fail('after approving, the next item is not selected');
  if ((await count(page, 'approvals')) !== expected.approvals - 1) fail('the approvals total did not drop by one');
  await page.keyboard.press('r');
  await page.keyboard.type('not needed');
  const rejected = await selected(page);
  await Promise.all([page.waitForURL(/msg=rejected/), page.keyboard.press('Enter')]);
  if (!(await flash(page)).includes('Rejected')) fail('no confirmation after rejecting');
  if ((await selected(page)) === rejected) fail('the rejected item is still selected');

  // Edit then approve: the diff against the proposal follows the typing.
  await page.keyboard.press('e');
  const inArea = await page.evaluate(() => document.activeElement?.tagName);
  if (inArea !== 'TEXTAREA') fail(`e focused ${inArea}, not the parameters`);
  await page.keyboard.press('Control+End');
  await page.keyboard.type('\n"note": 1');
  const typedDiff = await page.locator('#detail [data-live-diff]').innerText();
  if (!typedDiff.includes('+ "note": 1')) fail(`the live diff shows ${JSON.stringify(typedDiff)}`);
  summary.live_diff = typedDiff;
  await page.evaluate(() => document.activeElement?.blur());

  // Decide an escalation: the model's label is preselected; Tab to Decide, Enter.
  await page.goto(`${base}/inbox?tab=decisions`);
  const esc = await selected(page);
  await page.keyboard.press('d');
  const label = await page.evaluate(() => document.activeElement?.value);
  if (label !== expected.guess) fail(`the label preselected is ${label}, the model guessed ${expected.guess}`);
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Tab');
    const t = await page.evaluate(() => document.activeElement?.textContent);
    if (t === 'Decide') break;
  }
  await Promise.all([page.waitForURL(/msg=decided/), page.keyboard.press('Enter')]);
  if ((await selected(page)) === esc) fail('the decided escalation is still selected');
  if ((await count(page, 'decisions')) !== expected.decisions - 1) fail('the decisions total did not drop by one');

  // A dead letter: no label, Dismiss with a reason.
  await page.goto(`${base}/inbox?tab=dead`);
  if ((await page.locator('#detail select[name=label]').count()) !== 0) fail('a dead letter asks for a label');
  await page.keyboard.press('r');
  await page.keyboard.type('handled by hand');
  await Promise.all([page.waitForURL(/msg=dismissed/), page.keyboard.press('Enter')]);
  if ((await count(page, 'dead')) !== expected.dead - 1) fail('the dead letters total did not drop by one');

  // Live: a new approval appears within 5 s without a reload.
  await page.goto(`${base}/inbox?tab=approvals&sort=newest`);
  await page.evaluate(() => { window.__notReloaded = true; });
  const before = await count(page, 'approvals');
  const rowsBefore = await page.locator('tr[data-item]').evaluateAll((rs) => rs.map((r) => r.dataset.item));
  console.log('NEED_NEW_APPROVAL');
  const answer = await lines.next();
  const newId = String(answer.value || '').trim();
  const start = Date.now();
  await page.waitForFunction(
    ([id, n]) => {
      const c = document.querySelector('.tabs [data-count="approvals"]');
      return c && Number(c.textContent) === n + 1 && document.querySelector(`tr[data-item="${id}"]`) && document.title.startsWith('(');
    },
    [newId, before],
    { timeout: 5000 },
  );
  const live = await page.evaluate(() => window.__notReloaded === true);
  if (!live) fail('the page was reloaded');
  if (rowsBefore.includes(newId)) fail('the new approval was listed before it existed');
  summary.live_ms = Date.now() - start;
  summary.title = await page.title();

  // axe-core on every page, light and dark.
  const pages = {
    inbox: '/inbox',
    decisions: '/inbox?tab=decisions',
    dead: '/inbox?tab=dead',
    events: '/events',
    event: `/events/${expected.event}`,
    charters: '/charters',
    charter: `/charters/${expected.charter}`,
    rejected: '/rejected',
    runs: '/runs',
    audit: '/audit',
  };
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    for (const [name, path] of Object.entries(pages)) {
      await page.goto(`${base}${path}`);
      await axe(page, `${name}-${scheme}`);
    }
  }
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.goto(`${base}/inbox`);
  await page.screenshot({ path: join(outdir, 'inbox-dark.png'), fullPage: false });

  // 390 px: nothing scrolls sideways.
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, path] of Object.entries(pages)) {
    await page.goto(`${base}${path}`);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    summary.overflow[name] = wide;
    if (wide > 390) fail(`${name} scrolls sideways at 390 px (${wide} px wide)`);
  }
  await page.goto(`${base}/inbox`);
  await page.screenshot({ path: join(outdir, 'inbox-phone.png'), fullPage: false });
  console.log(JSON.stringify(summary));
} catch (e) {
  console.error(e.stack || String(e));
  code = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}
