// The console in a real browser: Debian's Chromium, headless, driven by Playwright (playwright-core) through its
// executablePath. Run by tests/browser/test_console_browser.py against the running app, which seeds the data
// and checks afterwards what the clicks changed. Input and output are JSON files (paths in the environment).
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const input = JSON.parse(readFileSync(process.env.FLOWS_INPUT, 'utf8'));
const shots = input.screenshot_dir;
mkdirSync(shots, { recursive: true });
const failures = [];
const out = { steps: [], urls: [], failures };

function check(condition, message) {
  if (!condition) failures.push(message);
  return condition;
}

async function shot(page, name, fullPage = true) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
  out.steps.push(name);
}

async function signIn(context, username, password) {
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  page.on('framenavigated', (frame) => out.urls.push(frame.url()));
  page.on('request', (request) => out.urls.push(request.url()));
  await page.goto(`${input.base_url}/console/search`);
  check(page.url().endsWith('/console/login'), `a signed-out browser should land on the sign-in page, not ${page.url()}`);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await shot(page, `sign-in-${username}`);
  await Promise.all([page.waitForURL('**/console/search'), page.click('button[type=submit]')]);
  const who = await page.textContent('[data-testid=signed-in-as]');
  check(who.includes(username), `the header should say who is signed in, says ${who}`);
  return page;
}

const browser = await chromium.launch({
  executablePath: input.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
         '--disable-extensions', '--no-first-run'],
});
try {
  // ---- an operator: search, export, timeline, letter preview, resolve the dispute ----
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await signIn(context, input.operator.username, input.operator.password);
  await shot(page, 'signed-in');

  await page.fill('[data-testid=search-form] input[name=name]', input.search_name);
  await Promise.all([page.waitForURL(/\/console\/search\/[^/]+$/), page.click('[data-testid=search-submit]')]);
  const rows = await page.locator('[data-testid=result-row]').count();
  out.result_rows = rows;
  check(rows === input.expected_rows, `the search for "${input.search_name}" should list ${input.expected_rows} contacts, lists ${rows}`);
  out.search_url = page.url();
  await shot(page, 'search-results');

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=export-csv]')]);
  out.csv_filename = download.suggestedFilename();
  out.csv = readFileSync(await download.path(), 'utf8');

  await Promise.all([page.waitForURL('**/console/debtors/*'), page.locator('[data-testid=debtor-link]').first().click()]);
  const debtorUrl = page.url();
  out.debtor_url = debtorUrl;
  out.timeline_entries = await page.locator('[data-testid=timeline-entry]').count();
  out.timeline_text = await page.textContent('[data-testid=timeline]');
  out.debtor_page_text = await page.textContent('main');
  await shot(page, 'timeline');

  // the letter that was sent: its contact, then its preview
  const letterRow = page.locator('[data-testid=contact-row]', { hasText: 'letter' }).first();
  await Promise.all([page.waitForURL('**/console/contacts/*'), letterRow.locator('a').first().click()]);
  await shot(page, 'contact');
  await Promise.all([page.waitForURL('**/preview'), page.locator('[data-testid=preview-link]').first().click()]);
  const pdfUrl = await page.getAttribute('[data-testid=letter-pdf]', 'data');
  const pdf = await page.request.get(new URL(pdfUrl, page.url()).toString());
  const body = await pdf.body();
  out.pdf_status = pdf.status();
  out.pdf_content_type = pdf.headers()['content-type'];
  out.pdf_magic = body.subarray(0, 5).toString('latin1');
  out.pdf_bytes = body.length;
  await shot(page, 'letter-preview');

  // the e-mail as sent: a click on its self-service link inside the preview must not open the debtor's page
  await page.goto(debtorUrl);
  const mailRow = page.locator('[data-testid=contact-row]', { hasText: 'e-mail' }).first();
  await Promise.all([page.waitForURL('**/console/contacts/*'), mailRow.locator('a').first().click()]);
  await Promise.all([page.waitForURL('**/preview'), page.locator('[data-testid=preview-link]').first().click()]);
  const mailFrame = page.frameLocator('[data-testid=email-html]');
  const link = mailFrame.locator('a[href*="/s/"]').first();
  await link.waitFor();
  // the viewport, not the full page: a full-page capture resizes the page and the frame comes out blank
  await page.locator('[data-testid=email-html]').scrollIntoViewIfNeeded();
  await shot(page, 'email-preview', false);
  out.email_link_clicked = (await link.count()) === 1;
  if (out.email_link_clicked) {
    await link.click();
    await page.waitForTimeout(1000);
  }
  const frameElement = await page.$('[data-testid=email-html]');
  out.frame_url_after_click = (await frameElement.contentFrame()).url();
  await shot(page, 'email-link-refused');

  // resolve the dispute from the debtor's page
  await page.goto(debtorUrl);
  const held = page.locator('[data-testid=case][data-case-status=held]');
  check(await held.count() === 1, 'the disputed case should show as held');
  await page.fill('[data-testid=resolve-dispute] textarea[name=note]', input.resolve_note);
  await shot(page, 'before-resolve');
  await Promise.all([page.waitForURL('**done=dispute_resolved'), page.click('[data-testid=resolve-dispute] button[type=submit]')]);
  out.done_text = await page.textContent('[data-testid=done]');
  out.case_status_after = await page.getAttribute('[data-testid=case]', 'data-case-status');
  await shot(page, 'dispute-resolved');

  // a form posted without its CSRF token is refused, even from a signed-in browser
  const noToken = await page.request.post(`${input.base_url}/console/actions/hold-case`, {
    form: { case_id: input.case_id, note: 'no token' },
    headers: { Origin: input.base_url },
  });
  out.no_csrf_status = noToken.status();
  await context.close();

  // ---- a viewer: sees the case, cannot act on it ----
  const viewerContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const viewer = await signIn(viewerContext, input.viewer.username, input.viewer.password);
  await viewer.goto(debtorUrl);
  out.viewer_sees_resolve_form = await viewer.locator('[data-testid=resolve-dispute]').count();
  out.viewer_sees_hold_form = await viewer.locator('[data-testid=hold-case]').count();
  const token = await viewer.getAttribute('input[name=csrf_token]', 'value');
  const attempt = await viewer.request.post(`${input.base_url}/console/actions/hold-case`, {
    form: { csrf_token: token, case_id: input.case_id, note: 'a viewer tries' },
    headers: { Origin: input.base_url },
  });
  out.viewer_post_status = attempt.status();
  await shot(viewer, 'viewer-debtor-page');
  await viewerContext.close();
} catch (error) {
  failures.push(`the browser flow broke: ${error.stack || error}`);
} finally {
  await browser.close();
  writeFileSync(process.env.FLOWS_OUTPUT, JSON.stringify(out, null, 2));
}
process.exit(failures.length ? 1 : 0);
