// Drives Debian's Chromium through the coordinator's web view, as an operator would, with the
// operator's client certificate: the overview, a click on a host and on one of its VMs (its
// page: chart with the forecast band, explanation, dependencies), the ecosystem graph, the plans.
// Saves a screenshot of each page and prints what it saw as JSON on stdout; the Rust test
// (tests/tests/cluster/web_view.rs) compares that with the API.
//
// Environment: PRESAGE_PLAYWRIGHT (the playwright-core package folder), PRESAGE_URL,
// PRESAGE_CERT, PRESAGE_KEY, PRESAGE_SHOTS (a folder), PRESAGE_VM (a VM to reach by clicks),
// PRESAGE_HOST (its host), PRESAGE_CHROMIUM (default /usr/bin/chromium).
import { createRequire } from 'module';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PRESAGE_PLAYWRIGHT);
const url = process.env.PRESAGE_URL;
const shots = process.env.PRESAGE_SHOTS;
const seen = { pages: {} };

const browser = await chromium.launch({
  executablePath: process.env.PRESAGE_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
});
try {
  const context = await browser.newContext({
    // The coordinator's certificate is from the cluster CA, not a public one.
    ignoreHTTPSErrors: true,
    clientCertificates: [{ origin: url, certPath: process.env.PRESAGE_CERT, keyPath: process.env.PRESAGE_KEY }],
    viewport: { width: 1400, height: 1000 },
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const ready = async (name) => {
    await page.waitForFunction((n) => document.body.dataset.ready === n, name, { timeout: 30000 });
    const error = await page.locator('main .error').allTextContents();
    if (error.length) throw new Error(`${name}: the page says ${error.join('; ')}`);
  };

  // The overview.
  const started = Date.now();
  await page.goto(`${url}/ui/`);
  await ready('overview');
  seen.pages.overview = {
    load_ms: Date.now() - started,
    hosts: await page.locator('#hosts tr.host').evaluateAll((rows) => rows.map((r) => r.dataset.host)),
    tiles: await page.locator('#tiles .tile b').allTextContents(),
    chart: await page.locator('#cluster-chart canvas').count(),
  };
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  // A click on a host shows its VMs; a click on one opens its page.
  await page.locator(`#hosts tr.host[data-host="${process.env.PRESAGE_HOST}"]`).click();
  const link = page.locator(`tr.host-vms a.vm-link[data-vm="${process.env.PRESAGE_VM}"]`);
  seen.pages.overview.vm_links = await page.locator('tr.host-vms a.vm-link').count();
  await link.click();
  await ready('vm');
  seen.pages.vm = {
    hash: await page.evaluate(() => location.hash),
    title: await page.locator('main h1').textContent(),
    host: (await page.locator('#vm-tiles .tile b').first().textContent()),
    chart_title: await page.locator('#vm-cpu-chart .u-title').textContent(),
    chart_series: await page.locator('#vm-cpu-chart .u-legend .u-series').allTextContents(),
    explain_rows: await page.locator('#vm-explain tbody tr').count(),
    dependencies: await page.locator('#vm-dependencies').textContent(),
  };
  await page.screenshot({ path: `${shots}/vm.png`, fullPage: true });

  // The ecosystem graph.
  await page.locator('header nav a[data-page="ecosystem"]').click();
  await ready('ecosystem');
  seen.pages.ecosystem = await page.evaluate(() => {
    const cy = window.presageGraph;
    return cy ? {
      nodes: cy.nodes().map((n) => ({ id: n.id(), status: n.data('status'), colour: n.style('background-color') })),
      edges: cy.edges().map((e) => ({ from: e.source().id(), to: e.target().id(), colour: e.style('line-color') })),
    } : null;
  });
  await page.screenshot({ path: `${shots}/ecosystem.png`, fullPage: true });

  // The plans and the journal.
  await page.locator('header nav a[data-page="plans"]').click();
  await ready('plans');
  seen.pages.plans = {
    journal: await page.locator('.journal-plan').evaluateAll((ps) => ps.map((p) => ({ id: p.dataset.plan, text: p.textContent }))),
    current: await page.locator('main h1').first().textContent(),
  };
  await page.screenshot({ path: `${shots}/plans.png`, fullPage: true });
  seen.errors = errors;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(seen));
