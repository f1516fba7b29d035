// Drives the page of `sa2va serve` in headless Chromium: upload, a segmentation turn with a forced answer,
// the mask overlay on the canvas, a follow-up turn and the RLE JSON export.
// usage: node browser_test.mjs URL IMAGE_PNG [CHROMIUM]   (env BROWSER_TEST_OUT: folder for screenshots)
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [url, imagePath, chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium'] = process.argv.slice(2);
if (!url || !imagePath) {
  console.error('usage: node browser_test.mjs URL IMAGE_PNG [CHROMIUM]');
  process.exit(2);
}
const outDir = process.env.BROWSER_TEST_OUT || '';
const ANSWER_TIMEOUT_MS = 180_000;  // a CPU build on two cores, the first request also warms up
const MIN_CHANGED_FRACTION = 0.05;

class TestFailure extends Error {}
function check(condition, message) {
  if (!condition) throw new TestFailure(message);
}

// pycocotools' rleFrString, written independently of the page's, to check what it exports.
function rleFrString(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let value = 0, shift = 0, more = true, c = 0;
    while (more) {
      c = text.charCodeAt(p++) - 48;
      value += (c & 0x1f) * 2 ** shift;
      more = (c & 0x20) !== 0;
      shift += 5;
    }
    if (c & 0x10) value -= 2 ** shift;
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

function pngSize(file) {
  const bytes = fs.readFileSync(file);
  check(bytes.readUInt32BE(0) === 0x89504e47, `${file} is not a PNG`);
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

async function screenshot(page, name, locator) {
  if (!outDir) return;
  fs.mkdirSync(outDir, { recursive: true });
  await (locator || page).screenshot({ path: path.join(outDir, name) });
}

async function sendTurn(page, text, expectedTurns) {
  await page.fill('#prompt', text);
  await page.click('#send');
  // The turn is finished when its stream ended with "done" (or failed: then report the banner).
  await page.waitForFunction((n) => {
    const turns = document.querySelectorAll('#conversation .assistant');
    const last = turns[turns.length - 1];
    return turns.length >= n && last && ['done', 'error', 'stopped'].includes(last.dataset.state);
  }, expectedTurns, { timeout: ANSWER_TIMEOUT_MS });
  const last = page.locator('#conversation .assistant').nth(expectedTurns - 1);
  const turnState = await last.getAttribute('data-state');
  const banner = (await page.locator('#error').isVisible()) ? await page.locator('#error-text').textContent() : '';
  check(turnState === 'done', `turn "${text}" ended as ${turnState}: ${banner}`);
  return last;
}

async function main() {
  const image = pngSize(imagePath);
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
  const pageErrors = [];
  try {
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') console.error(`[page console] ${m.text()}`); });
    page.setDefaultTimeout(30_000);

    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('model-name').dataset.state !== 'loading');
    const modelState = await page.getAttribute('#model-name', 'data-state');
    check(modelState === 'ok', `the header shows no model: ${await page.textContent('#model-name')} / ${await page.textContent('#error-text')}`);
    const modelName = (await page.textContent('#model-name')).trim();

    // Upload: the session's frame 0 must be drawn at the image's own size.
    await page.setInputFiles('#media-input', imagePath);
    await page.waitForFunction(() => document.getElementById('media-canvas').dataset.frameLoaded === 'true', null, { timeout: 60_000 });
    const canvasSize = await page.evaluate(() => { const c = document.getElementById('media-canvas'); return { width: c.width, height: c.height }; });
    check(canvasSize.width === image.width && canvasSize.height === image.height,
      `canvas is ${canvasSize.width}x${canvasSize.height}, the image ${image.width}x${image.height}`);

    // First turn, teacher-forced so that the answer has exactly one [SEG] whatever the weights.
    await page.click('#options summary');
    await page.fill('#forced-answer', 'Sure, [SEG].');
    const first = await sendTurn(page, 'Please segment the red circle.', 1);
    const firstText = await first.locator('.turn-text').textContent();
    check(firstText.includes('[SEG]'), `the first answer has no [SEG]: "${firstText}"`);
    check(await first.locator('.seg-chip').count() === 1, 'the first answer shows no [SEG] chip');
    await page.waitForFunction(() => document.getElementById('media-canvas').dataset.masksDrawn === '1');
    check(await page.locator('.object-toggle').count() === 1, 'the object list has no single toggle');
    await screenshot(page, 'page.png');
    await screenshot(page, 'canvas-with-mask.png', page.locator('#media-canvas'));

    // With the mask vs. without: the overlay must change a substantial part of the canvas, towards its colour.
    await page.evaluate(() => {
      const c = document.getElementById('media-canvas');
      window.__withMask = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    });
    const maskColor = await page.getAttribute('#objects .object[data-index="0"]', 'data-color');
    await page.locator('.object-toggle').first().uncheck();
    await page.waitForFunction(() => document.getElementById('media-canvas').dataset.masksDrawn === '0');
    await screenshot(page, 'canvas-without-mask.png', page.locator('#media-canvas'));
    const diff = await page.evaluate((hex) => {
      const c = document.getElementById('media-canvas');
      const without = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const withMask = window.__withMask;
      const n = parseInt(hex.slice(1), 16);
      const color = [(n >> 16) & 255, (n >> 8) & 255, n & 255];
      let changed = 0, towardsColor = 0;
      for (let i = 0; i < without.length; i += 4) {
        let delta = 0, before = 0, after = 0;
        for (let ch = 0; ch < 3; ++ch) {
          delta = Math.max(delta, Math.abs(withMask[i + ch] - without[i + ch]));
          before += Math.abs(without[i + ch] - color[ch]);
          after += Math.abs(withMask[i + ch] - color[ch]);
        }
        if (delta > 8) { changed++; if (after < before) towardsColor++; }
      }
      return { changed, towardsColor, total: without.length / 4 };
    }, maskColor);
    const changedFraction = diff.changed / diff.total;
    check(changedFraction >= MIN_CHANGED_FRACTION,
      `the mask overlay changes ${(100 * changedFraction).toFixed(2)}% of the canvas (at least ${100 * MIN_CHANGED_FRACTION}% expected)`);
    check(diff.towardsColor >= 0.95 * diff.changed,
      `only ${diff.towardsColor} of ${diff.changed} changed pixels are tinted towards the mask colour ${maskColor}`);
    await page.locator('.object-toggle').first().check();
    await page.waitForFunction(() => document.getElementById('media-canvas').dataset.masksDrawn === '1');

    // Follow-up turn in the same session.
    const second = await sendTurn(page, 'And the blue box?', 2);
    const secondText = (await second.locator('.turn-text').textContent()).trim();
    check(secondText.includes('[SEG]'), `the second answer has no [SEG]: "${secondText}"`);
    // The page shows a turn's masks (and selects it) once they came; the export below is of this turn.
    check(await second.evaluate((node) => node.classList.contains('selected')), 'the follow-up turn gave no masks');
    await page.waitForFunction(() => document.getElementById('media-canvas').dataset.masksDrawn === '1');

    // Export of the last answer's masks.
    const [downloadEvent] = await Promise.all([page.waitForEvent('download'), page.click('#download-rle')]);
    const exported = JSON.parse(fs.readFileSync(await downloadEvent.path(), 'utf8'));
    if (outDir) fs.writeFileSync(path.join(outDir, 'masks.json'), JSON.stringify(exported));
    check(exported.width === image.width && exported.height === image.height,
      `the RLE JSON is for ${exported.width}x${exported.height}, the image is ${image.width}x${image.height}`);
    check(Array.isArray(exported.masks) && exported.masks.length === 1, `the RLE JSON has ${exported.masks?.length} masks, 1 expected`);
    const frames = exported.masks[0].frames;
    check(Array.isArray(frames) && frames.length === 1 && frames[0].frame === 0, 'the mask should have exactly frame 0');
    const { rle, area } = frames[0];
    check(rle.size[0] === image.height && rle.size[1] === image.width, `the RLE size is ${rle.size}, expected [${image.height}, ${image.width}]`);
    const counts = rleFrString(rle.counts);
    const covered = counts.reduce((a, b) => a + b, 0);
    check(covered === image.width * image.height, `the RLE counts cover ${covered} pixels, not ${image.width * image.height}`);
    const foreground = counts.reduce((a, b, i) => a + (i % 2 ? b : 0), 0);
    check(foreground === area, `the RLE has ${foreground} foreground pixels, its area says ${area}`);

    check(!(await page.locator('#error').isVisible()), `the error banner shows: ${await page.textContent('#error-text')}`);
    check(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join(' | ')}`);
    console.log(`browser test passed: model ${modelName}, ${image.width}x${image.height} image, mask overlay changed ` +
      `${(100 * changedFraction).toFixed(1)}% of the canvas, 2 turns, RLE JSON with 1 mask of ${foreground} pixels`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`browser test FAILED: ${e instanceof TestFailure ? e.message : e.stack || e}`);
  process.exit(1);
});
