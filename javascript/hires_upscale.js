// sd-webui-hires-upscale: live hints in the page.
//
// As the user moves sliders or types, the accordion shows the final size, the tile grid in
// tiled mode and the same warnings the core's advice gives: the rules are data
// (hires_upscale/advice.py) that come with the page (HU.readOptions), evaluated here with
// the same meaning. The size logic mirrors hires_upscale/resolution.py; tests/test_page_logic.py
// checks both give the same answers on shared vectors.
(function (root) {
    "use strict";

    const HU = {};
    const SNAP = 64;

    // Python's round(): halves go to the even neighbour.
    HU.pyRound = function (value) {
        const floor = Math.floor(value);
        const diff = value - floor;
        if (diff > 0.5) return floor + 1;
        if (diff < 0.5) return floor;
        return floor % 2 === 0 ? floor : floor + 1;
    };

    HU.snap = function (value, multiple) {
        multiple = multiple === undefined ? SNAP : multiple;
        if (multiple <= 1) return Math.max(1, HU.pyRound(value));
        return Math.max(multiple, Math.floor(value / multiple + 0.5) * multiple);
    };

    HU.findPreset = function (presets, name) {
        return (presets || []).find((p) => p.name === name || p.label === name) || null;
    };

    // The size asked for, before snapping (resolution.requested_size).
    HU.requestedSize = function (source, p, presets) {
        const [sw, sh] = source;
        let mode = p.resize_mode, scale = p.scale, width = p.width, height = p.height;
        if (mode === "preset") {
            const preset = HU.findPreset(presets, p.preset);
            if (!preset) return null;
            if (preset.scale) {
                mode = "scale";
                scale = preset.scale;
            } else {
                mode = "size";
                width = preset.width;
                height = preset.height;
            }
        }
        if (mode === "scale") return [Math.max(1, HU.pyRound(sw * scale)), Math.max(1, HU.pyRound(sh * scale))];
        if (width && height) return [width, height];
        if (width) return [width, Math.max(1, HU.pyRound(width * sh / sw))];
        if (height) return [Math.max(1, HU.pyRound(height * sw / sh)), height];
        return null;
    };

    HU.upscaledSize = function (source, target, fit) {
        const [sw, sh] = source;
        const [tw, th] = target;
        if (fit === "stretch" || sw * th === sh * tw) return [tw, th];
        const factor = fit === "crop" ? Math.max(tw / sw, th / sh) : Math.min(tw / sw, th / sh);
        const size = [HU.pyRound(sw * factor), HU.pyRound(sh * factor)];
        if (fit === "crop") return [Math.max(size[0], tw), Math.max(size[1], th)];
        return [Math.min(size[0], tw), Math.min(size[1], th)];
    };

    // resolution.plan_resize, without the pixel limit (the server enforces it).
    HU.planResize = function (source, p, presets, multiple) {
        const requested = HU.requestedSize(source, p, presets);
        if (!requested) return null;
        const target = [HU.snap(requested[0], multiple), HU.snap(requested[1], multiple)];
        return {
            source: source,
            requested: requested,
            target: target,
            upscaled: HU.upscaledSize(source, target, p.fit),
            snapped: requested[0] !== target[0] || requested[1] !== target[1],
            scale: Math.max(target[0] / source[0], target[1] / source[1]),
        };
    };

    // plan.plan_facts
    // plan.py pass_count: the parameters' passes, or with 0 the fewest of at most 2x each (at most 4)
    HU.passCount = function (p, plan) {
        if (!(p.denoise > 0)) return 1;
        if (p.passes) return p.passes;
        const fewest = plan.scale > 1 ? Math.ceil(Math.log2(plan.scale) - 1e-9) : 1;
        return Math.max(1, Math.min(fewest, 4));
    };

    HU.facts = function (p, plan, family, firstPassSteps, upscalerKind) {
        const [tw, th] = plan.target;
        const [rw, rh] = plan.requested;
        return {
            upscaler_kind: upscalerKind,
            denoise: p.denoise,
            second_pass: p.denoise > 0,
            pass_scale: HU.pyRound(Math.pow(plan.scale, 1 / HU.passCount(p, plan)) * 100) / 100,
            tiled: p.tiled,
            target_pixels: tw * th,
            comfortable_pixels: family.comfortable_pixels,
            family: family.name,
            known_family: family.known,
            tileable: family.tileable,
            flow: family.flow,
            denoise_range: family.denoise_range,
            denoise_high: family.denoise_high,
            max_denoise: family.max_denoise,
            cfg_override: p.cfg_scale,
            target: tw + "x" + th,
            requested: rw + "x" + rh,
            snapped: plan.snapped,
            hires_steps: p.hires_steps,
            first_pass_steps: firstPassSteps || null,
            max_useful_steps: firstPassSteps ? family.max_steps_ratio * firstPassSteps : null,
        };
    };

    const OPERATORS = {
        "==": (a, b) => a === b,
        "!=": (a, b) => a !== b,
        "<": (a, b) => a < b,
        "<=": (a, b) => a <= b,
        ">": (a, b) => a > b,
        ">=": (a, b) => a >= b,
    };

    HU.formatFact = function (value) {
        if (typeof value === "number" && !Number.isInteger(value)) {
            return value.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
        }
        if (typeof value === "boolean") return value ? "True" : "False";
        if (value === null || value === undefined) return "None";
        return String(value);
    };

    // advice.evaluate over advice.rules_as_data()
    HU.evaluate = function (rules, facts) {
        const holds = function ([name, op, operand]) {
            if (operand !== null && typeof operand === "object") operand = facts[operand.fact];
            const value = facts[name];
            if (value === null || value === undefined || operand === null || operand === undefined) return false;
            return OPERATORS[op](value, operand);
        };
        return rules.filter((rule) => rule.when.every(holds)).map((rule) => ({
            code: rule.code,
            level: rule.level,
            field: rule.field,
            message: rule.message.replace(/\{(\w+)\}/g, (_, name) => HU.formatFact(facts[name])),
        }));
    };

    // tiling.make_grid's tile count, with the engine's overlap (upscaler.ModelUpscaler.overlap_for)
    HU.tileCount = function (length, tile, overlap) {
        if (length <= tile) return 1;
        return 1 + Math.ceil((length - tile) / (tile - overlap));
    };

    HU.tileGrid = function (source, tile, bytesPerPixel) {
        const overlap = Math.max(8, Math.min(32, Math.floor(tile / 8)));
        const big = Math.max(source[0], source[1]) > tile;
        const used = big ? overlap : 0;
        const side = Math.min(tile, Math.max(source[0], source[1]));
        return {columns: HU.tileCount(source[0], tile, used), rows: HU.tileCount(source[1], tile, used), tile: tile,
                megabytes: bytesPerPixel ? Math.round(side * side * bytesPerPixel / 1048576) : null};
    };

    function escapeHtml(text) {
        return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
    }

    HU.previewHtml = function (plan, advice, grid) {
        let html = "";
        if (plan) {
            html += "<p class='hires-upscale-size'>" + plan.source.join("x") + " → " + plan.target.join("x") + "</p>";
        }
        if (grid) {
            const count = grid.columns * grid.rows;
            html += "<p class='hires-upscale-grid'>tiled: " + grid.columns + "×" + grid.rows + " = " + count +
                " tile" + (count === 1 ? "" : "s") + " of " + grid.tile + " px" +
                (grid.megabytes !== null ? ", about " + grid.megabytes + " MB of activations per tile (4x model)" : "") +
                "</p>";
        }
        html += "<div class='hires-upscale-advice'>" + advice.map((a) =>
            "<p class='hires-upscale-" + a.level + "' data-code='" + a.code + "'>" + escapeHtml(a.message) + "</p>"
        ).join("") + "</div>";
        return html;
    };

    // -- the page --------------------------------------------------------------------------

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function element(id) {
        return app().querySelector("#" + id);
    }

    function readNumber(id) {
        const input = element(id) && element(id).querySelector("input[type=number]");
        return input ? Number(input.value) : 0;
    }

    function readValue(id) {
        const box = element(id);
        if (!box) return "";
        const checked = box.querySelector("input[type=radio]:checked");
        if (checked) return checked.value;
        const input = box.querySelector("input, textarea");
        return input ? input.value : "";
    }

    function readChecked(id) {
        const input = element(id) && element(id).querySelector("input[type=checkbox]");
        return Boolean(input && input.checked);
    }

    function setNumber(id, value) {
        const box = element(id);
        if (!box) return;
        for (const input of box.querySelectorAll("input")) {
            input.value = value;
        }
        const number = box.querySelector("input[type=number]");
        if (number && typeof updateInput === "function") updateInput(number);
    }

    function readParams(tab) {
        const id = (name) => "hires_upscale_" + tab + "_" + name;
        return {
            upscaler: readValue(id("upscaler")),
            resize_mode: readValue(id("resize_mode")) || "scale",
            scale: readNumber(id("scale")),
            width: readNumber(id("width")),
            height: readNumber(id("height")),
            preset: readValue(id("preset")),
            fit: readValue(id("fit")) || "crop",
            denoise: readNumber(id("denoise")),
            hires_steps: readNumber(id("hires_steps")),
            tiled: readValue(id("tiled")) || "auto",
            passes: element(id("passes")) ? readNumber(id("passes")) : 1,
            tile_size: readNumber(id("tile_size")),
            cfg_scale: readNumber(id("cfg_scale")),
        };
    }

    function readSource(tab) {
        return [readNumber(tab + "_width") || 512, readNumber(tab + "_height") || 512];
    }

    // The page's data (hires_upscale/webui/service.py page_options) comes with the page, in a hidden
    // text box of each accordion that Gradio fills again each time the page loads: no API call, so
    // the hints work under --api-auth, behind --gradio-auth and under --subpath alike.
    HU.readOptions = function () {
        for (const tab of ["txt2img", "img2img"]) {
            const box = element("hires_upscale_" + tab + "_page_options");
            const input = box && box.querySelector("textarea, input");
            const text = input ? input.value : "";
            if (!text) continue;
            if (text !== HU.optionsText) {
                try {
                    HU.options = JSON.parse(text);
                    HU.optionsText = text;
                    HU.optionsVersion = (HU.optionsVersion || 0) + 1;  // new data re-renders, whatever its length
                } catch (error) {
                    console.warn("sd-webui-hires-upscale: the page's data is not JSON:", error);
                }
            }
            break;
        }
        return HU.options || null;
    };

    HU.render = function (tab) {
        const options = HU.readOptions();
        const target = element("hires_upscale_" + tab + "_advice");
        if (!options || !target) return;
        const p = readParams(tab);
        const source = readSource(tab);
        const family = options.families[options.model_family] || options.families.sd15;
        const plan = HU.planResize(source, p, options.presets[family.name], SNAP);
        if (!plan) {
            target.innerHTML = HU.previewHtml(null, [{code: "size", level: "error", field: "width",
                message: "Give a width or a height above 0 (or pick another resize mode)."}], null);
            return;
        }
        const kind = options.upscaler_kinds[p.upscaler] || "model";
        const facts = HU.facts(p, plan, family, readNumber(tab + "_steps"), kind);
        const grid = p.tiled === "on" && p.tile_size > 0 ? HU.tileGrid(source, p.tile_size, options.tile_bytes_per_pixel) : null;
        target.innerHTML = HU.previewHtml(plan, HU.evaluate(options.advice_rules, facts), grid);
    };

    function snapOnChange(tab, name) {
        const box = element("hires_upscale_" + tab + "_" + name);
        const number = box && box.querySelector("input[type=number]");
        if (!number) return;
        number.addEventListener("change", () => {
            const value = Number(number.value);
            const snapped = value > 0 ? HU.snap(value) : 0;
            if (snapped !== value) setNumber("hires_upscale_" + tab + "_" + name, snapped);
            HU.render(tab);
        });
    }

    function presetButtons(tab) {
        const anchor = element("hires_upscale_" + tab + "_preset");
        if (!anchor || anchor.parentElement.querySelector(".hires-upscale-presets")) return;
        const family = HU.options.model_family;
        const row = document.createElement("div");
        row.className = "hires-upscale-presets";
        for (const preset of HU.options.presets[family] || []) {
            if (!preset.width) continue;
            const button = document.createElement("button");
            button.type = "button";
            button.className = "hires-upscale-preset";
            button.textContent = preset.width + "×" + preset.height;
            button.title = preset.label;
            button.addEventListener("click", () => {
                const radio = element("hires_upscale_" + tab + "_resize_mode").querySelector("input[value=size]");
                if (radio && !radio.checked) radio.click();
                setNumber("hires_upscale_" + tab + "_width", preset.width);
                setNumber("hires_upscale_" + tab + "_height", preset.height);
                HU.render(tab);
            });
            row.appendChild(button);
        }
        anchor.insertAdjacentElement("afterend", row);
    }

    HU.attach = function (tab) {
        const accordion = element("hires_upscale_" + tab + "_enabled");
        if (!accordion || accordion.dataset.hiresUpscaleAttached) return;
        accordion.dataset.hiresUpscaleAttached = "1";
        snapOnChange(tab, "width");
        snapOnChange(tab, "height");
        presetButtons(tab);
        // Gradio changes values in many ways (dropdowns, paste, "send to", its own updates) and not
        // all of them fire DOM events at a useful moment, so watch the values themselves: a few
        // reads four times a second, and a render only when something changed. Only while our
        // controls are on screen: a closed accordion or another tab costs nothing.
        let last = "";
        const refresh = function () {
            HU.readOptions();
            const key = JSON.stringify([readParams(tab), readSource(tab), readNumber(tab + "_steps"),
                HU.optionsVersion || 0]);
            if (key !== last) {
                last = key;
                HU.render(tab);
            }
        };
        let timer = null;
        const watch = function (visible) {
            if (visible && timer === null) {
                refresh();
                timer = setInterval(refresh, 250);
            } else if (!visible && timer !== null) {
                clearInterval(timer);
                timer = null;
            }
        };
        HU.watching[tab] = () => timer !== null;
        const shown = element("hires_upscale_" + tab + "_advice");
        if (shown && typeof IntersectionObserver === "function") {
            // A margin larger than any page: "intersecting" then means rendered at all (not in a closed
            // accordion nor a hidden tab), wherever the page is scrolled.
            new IntersectionObserver((entries) => watch(entries[entries.length - 1].isIntersecting),
                {rootMargin: "100000px"}).observe(shown);
        } else {
            watch(true);
        }
        // what the user types shows at once, polling or not
        accordion.addEventListener("input", refresh);
        accordion.addEventListener("change", refresh);
        refresh();
    };

    //: tab -> whether the page is watching that tab's controls now (they are on screen)
    HU.watching = {};

    HU.start = function () {
        let tries = 0;
        const begin = function () {
            const options = HU.readOptions();
            if (!options) {
                tries += 1;
                if (tries === 240) console.warn("sd-webui-hires-upscale: no live hints yet: the page's data has not come");
                setTimeout(begin, 250);
                return;
            }
            HU.addHints(options.hints);
            HU.attach("txt2img");
            HU.attach("img2img");
        };
        begin();
    };

    // Hover hints through the WebUI's own `titles` table (javascript/hints.js), keyed by label text;
    // labels and hints are the parameters' own metadata (the page's data: "hints").
    HU.addHints = function (hints) {
        if (typeof titles === "undefined") return;
        for (const [label, hint] of Object.entries(hints || {})) {
            if (!(label in titles)) titles[label] = hint;
        }
    };

    root.HiresUpscale = HU;
    if (typeof onUiLoaded === "function") onUiLoaded(HU.start);
})(typeof globalThis !== "undefined" ? globalThis : this);
