// The page's pure logic (javascript/hires_upscale.js) against vectors computed by the Python core.
// Run by tests/test_page_logic.py, which writes the vectors and sets HU_VECTORS.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

const here = new URL(".", import.meta.url);
const source = readFileSync(new URL("../../javascript/hires_upscale.js", here), "utf8");
const sandbox = {};
sandbox.globalThis = sandbox;
vm.runInNewContext(source, sandbox);
const HU = sandbox.HiresUpscale;
const vectors = JSON.parse(readFileSync(process.env.HU_VECTORS, "utf8"));
const plain = (value) => JSON.parse(JSON.stringify(value));

test("sizes: snapping, aspect and fit like resolution.plan_resize", () => {
    assert.ok(vectors.sizes.length > 100);
    for (const v of vectors.sizes) {
        const plan = HU.planResize(v.source, v.params, vectors.presets[v.family], v.multiple);
        assert.deepEqual(plain([plan.requested, plan.target, plan.upscaled, plan.snapped]),
            [v.requested, v.target, v.upscaled, v.snapped], JSON.stringify(v));
    }
});

test("advice: the same facts and the same messages as advice.evaluate", () => {
    assert.ok(vectors.advice.length > 100);
    for (const v of vectors.advice) {
        const plan = HU.planResize(v.source, v.params, vectors.presets[v.family.name], 64);
        const facts = HU.facts(v.params, plan, v.family, v.first_pass_steps, v.kind);
        assert.deepEqual(plain(facts), v.facts, JSON.stringify(v.params));
        assert.deepEqual(plain(HU.evaluate(vectors.rules, facts)), v.advice, JSON.stringify(v.params));
    }
});

test("tile grid counts like tiling.make_grid with the engine's overlap", () => {
    for (const v of vectors.grids) {
        const grid = HU.tileGrid(v.source, v.tile);
        assert.deepEqual([grid.columns, grid.rows], [v.columns, v.rows], JSON.stringify(v));
    }
});

test("memory estimate of a tile uses the bytes per pixel the server gives", () => {
    const grid = HU.tileGrid([512, 512], 256, vectors.tile_bytes_per_pixel);
    assert.equal(grid.megabytes, Math.round(256 * 256 * vectors.tile_bytes_per_pixel / 1048576));
    assert.equal(HU.tileGrid([100, 80], 256, vectors.tile_bytes_per_pixel).megabytes,
        Math.round(100 * 100 * vectors.tile_bytes_per_pixel / 1048576));
});

test("snap and Python's rounding", () => {
    assert.equal(HU.snap(1000), 1024);
    assert.equal(HU.snap(10), 64);
    assert.equal(HU.snap(96), 128);
    assert.equal(HU.pyRound(66.5), 66);
    assert.equal(HU.pyRound(67.5), 68);
});

test("preview html escapes messages", () => {
    const html = HU.previewHtml(null, [{code: "x", level: "warning", message: "<b>&"}], null);
    assert.ok(html.includes("&lt;b&gt;&amp;"));
});
