// Drives Charter's rollout pages in Debian's headless Chromium: log in with an admin token,
// review the oldest sampled run of route `rest` in the review queue (decision right, its
// action right), check the route's agreement and the promotion suggestion on the rollout
// page, promote the route to live from the suggestion, and read the route history. Saves
// review.png and rollout.png into <outdir> and prints a JSON summary on stdout. Any failure
// exits non-zero with the reason on stderr.
//
// usage: node rollout.mjs <base_url> <token> <outdir>

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, token, outdir] = process.argv.slice(2);
if (!base || !token || !outdir) {
  console.error('usage: node rollout.mjs <base_url> <token> <outdir>');
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

  await page.goto(`${base}/login?next=${encodeURIComponent('/charters/trio')}`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(/\/charters\/trio/), page.click('button[type=submit]')]);

  // The charter page links to the rollout page.
  await Promise.all([page.waitForURL(/\/rollout\/trio$/), page.click('a.rollout-link')]);
  const before = await page.locator('tr[data-route="rest"] .route-agreement').first().innerText();
  if (!before.includes('not enough reviewed')) fail(`before any review: ${before}`);
  if ((await page.locator('.suggestion').count()) !== 0) fail('a promotion is suggested before any review');

  // The review queue of route `rest`: review the oldest sample.
  await page.goto(`${base}/rollout/trio/review?route=rest`);
  const card = page.locator('.sample').first();
  await card.waitFor({ state: 'visible' });
  const sampleId = await card.getAttribute('data-sample');
  const cardText = await card.innerText();
  if (!cardText.includes('tag_other') || !cardText.includes('would_run')) {
    fail(`the sample does not show its would-run action: ${cardText}`);
  }
  await card.locator('input[name="decision"][value="right"]').check();
  await card.locator('input[name="action.tag_other"][value="right"]').check();
  await page.screenshot({ path: join(outdir, 'review.png'), fullPage: true });
  await Promise.all([
    page.waitForURL(/msg=/),
    card.getByRole('button', { name: 'Submit review' }).click(),
  ]);
  const flash = await page.locator('.flash').innerText();
  if (!flash.includes('agreed')) fail(`no confirmation after reviewing: ${flash}`);
  if ((await page.locator(`[data-sample="${sampleId}"]`).count()) !== 0) {
    fail('the sample is still in the queue after its review');
  }

  // The rollout page: agreement over one review, and the suggestion to promote.
  await page.goto(`${base}/rollout/trio`);
  const agreement = await page.locator('tr[data-route="rest"] .route-agreement').first().innerText();
  if (!agreement.includes('100.0%') || !agreement.includes('1 reviewed')) {
    fail(`the agreement after one review: ${agreement}`);
  }
  const suggestion = page.locator('.suggestion[data-route="rest"]');
  await suggestion.waitFor({ state: 'visible' });
  const modeBefore = await page.locator('tr[data-route="rest"] .route-mode-now').innerText();
  if (modeBefore.trim() !== 'shadow') fail(`rest is ${modeBefore} before the promotion`);

  // Promote it from the suggestion.
  await Promise.all([
    page.waitForURL(/msg=/),
    suggestion.getByRole('button', { name: 'Promote rest to live' }).click(),
  ]);
  const promoted = await page.locator('.flash').innerText();
  if (!promoted.includes('now runs in live mode')) fail(`after promoting: ${promoted}`);
  const modeAfter = await page.locator('tr[data-route="rest"] .route-mode-now').innerText();
  if (modeAfter.trim() !== 'live') fail(`rest is ${modeAfter} after the promotion`);
  if ((await page.locator('.suggestion').count()) !== 0) fail('still suggested once live');
  const history = await page.locator('table.history').innerText();
  if (!history.includes('route rest: shadow → live')) fail(`history: ${history}`);
  await page.screenshot({ path: join(outdir, 'rollout.png'), fullPage: true });
  console.log(JSON.stringify({ sample: sampleId, flash, agreement, promoted, history }));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  code = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
