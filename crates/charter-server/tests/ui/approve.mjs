// Drives Charter's web UI in Debian's headless Chromium: log in with a token, find the
// approval in the inbox, approve it, then open the run timeline and wait until it shows
// the executed action. Saves inbox.png, timeline.png and charter.png into <outdir> and prints a JSON
// summary on stdout. Any failure exits non-zero with the reason on stderr.
//
// usage: node approve.mjs <base_url> <token> <outdir>

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, token, outdir] = process.argv.slice(2);
if (!base || !token || !outdir) {
  console.error('usage: node approve.mjs <base_url> <token> <outdir>');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
mkdirSync(outdir, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'charter-ui-profile-'));

function fail(msg) {
  throw new Error(msg);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let code = 0;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);

  // Log in.
  await page.goto(`${base}/login`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(/\/inbox/), page.click('button[type=submit]')]);

  // The approval is in the inbox, with its evidence.
  const card = page.locator('.approval').first();
  await card.waitFor({ state: 'visible' });
  const approvalId = await card.getAttribute('data-approval');
  const eventId = await card.getAttribute('data-event');
  const cardText = await card.innerText();
  if (!cardText.includes('assign_billing')) fail(`the inbox card does not name the action: ${cardText}`);
  await page.screenshot({ path: join(outdir, 'inbox.png'), fullPage: true });

  // Approve it (a plain form POST, then a redirect back to the inbox).
  await Promise.all([
    page.waitForURL(/msg=/),
    card.getByRole('button', { name: 'Approve', exact: true }).click(),
  ]);
  const flash = await page.locator('.flash').innerText();
  if (!flash.includes('Approved')) fail(`no confirmation after approving: ${flash}`);
  if ((await page.locator(`[data-approval="${approvalId}"]`).count()) !== 0) {
    fail('the approval is still in the inbox after approving');
  }

  // The run timeline shows the action executed (the worker picks the approval up).
  let text = '';
  const deadline = Date.now() + 20000;
  for (;;) {
    await page.goto(`${base}/events/${eventId}`);
    text = await page.locator('main').innerText();
    if (text.includes('Action assign_billing') && text.includes('succeeded') && text.includes('Approval approved')) break;
    if (Date.now() > deadline) fail(`the timeline never showed the executed action:\n${text}`);
    await page.waitForTimeout(250);
  }
  await page.screenshot({ path: join(outdir, 'timeline.png'), fullPage: true });

  // The charter page: owner, mode, counts, and the measurement charts (inline SVG).
  await page.goto(`${base}/charters/support-triage`);
  const charts = await page.locator('.charts svg').count();
  if (charts < 3) fail(`the charter page shows ${charts} charts, expected 3`);
  await page.screenshot({ path: join(outdir, 'charter.png'), fullPage: true });
  console.log(JSON.stringify({ approval: approvalId, event: eventId, flash, timeline: text, charts }));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  code = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
