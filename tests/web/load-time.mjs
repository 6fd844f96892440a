// The web overview's load time in Debian's Chromium: each run opens /ui/ in a fresh page and
// records when the page has drawn its data (document.body.dataset.ready, set by app.js after
// the overview's request, the cluster chart and every host row), in milliseconds since the
// navigation started. Prints {"runs_ms": [...], "rows": N} on stdout.
// Environment: PRESAGE_PLAYWRIGHT, PRESAGE_URL, PRESAGE_CERT, PRESAGE_KEY, PRESAGE_RUNS (5),
// PRESAGE_CHROMIUM (/usr/bin/chromium), PRESAGE_SHOTS (optional: a screenshot of the last run).
import { createRequire } from 'module';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PRESAGE_PLAYWRIGHT);
const url = process.env.PRESAGE_URL;
const runs = Number(process.env.PRESAGE_RUNS || 5);
const browser = await chromium.launch({
  executablePath: process.env.PRESAGE_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
});
const out = { runs_ms: [], first_paint_ms: [], rows: 0 };
try {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    clientCertificates: [{ origin: url, certPath: process.env.PRESAGE_CERT, keyPath: process.env.PRESAGE_KEY }],
    viewport: { width: 1400, height: 1000 },
  });
  for (let i = 0; i < runs; i++) {
    const page = await context.newPage();
    await page.goto(`${url}/ui/`);
    await page.waitForFunction(() => document.body.dataset.ready === 'overview', null, { timeout: 60000 });
    const t = await page.evaluate(() => ({
      ready: window.presageRendered,
      paint: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null,
      rows: document.querySelectorAll('#hosts tr.host').length,
      error: document.querySelector('main .error') ? document.querySelector('main .error').textContent : null,
    }));
    if (t.error) throw new Error(t.error);
    out.runs_ms.push(Math.round(t.ready));
    out.first_paint_ms.push(t.paint === null ? null : Math.round(t.paint));
    out.rows = t.rows;
    if (i === runs - 1 && process.env.PRESAGE_SHOTS) await page.screenshot({ path: `${process.env.PRESAGE_SHOTS}/overview-large.png` });
    await page.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
