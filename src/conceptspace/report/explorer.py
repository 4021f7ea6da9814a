"""The report's interactive explorer: a step slider over the checkpoints that moves a marker along every class's
trajectory in concept space and shows that checkpoint's generations (every class, and every elicitation of the
held-out classes when the run has them), the per-concept accuracies, the elicitations' joint accuracy and the
onsets reached by then. Plain JavaScript and inline data: the page stays one file that needs no network.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

from ..rundir import RunDir, load_npz

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def tile(images: np.ndarray, gap: int = 1) -> np.ndarray:
    """[rows, cols, 3, h, w] uint8 -> one [H, W, 3] uint8 image, white gaps between tiles."""
    rows, cols, _, h, w = images.shape
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[r, c].transpose(1, 2, 0)
    return out


def png_uri(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def explorer_data(rd: RunDir, coords: np.ndarray, acc: np.ndarray, metrics: dict, n_show: int = 4) -> dict:
    """Everything the explorer draws, as JSON-ready lists: coords [K, P, D] and acc [K, P, C] of the evaluation,
    one PNG per checkpoint of each class's first generations, and of each elicitation's when they were kept."""
    arrays = load_npz(rd.trajectory_source)
    steps = arrays["steps"].tolist()
    names = [str(n) for n in arrays["classes"]]
    data: dict = {
        "steps": steps, "classes": names, "held_out": [bool(h) for h in arrays["held_out"]],
        "concepts": metrics["concepts"], "coords": np.round(coords[..., :2], 3).tolist(),
        "accuracy": np.round(acc, 3).tolist(),
        "class_images": [png_uri(tile(arrays["samples"][k][:, :n_show])) for k in range(len(steps))],
        "turn": {n: t.get("step") for n, t in metrics.get("turn", {}).items()},
        "onsets": {n: e.get("onset_step", {}) for n, e in metrics.get("elicitation", {}).items()},
        "elicitation": None,
    }
    if rd.elicitation.is_file():
        e = load_npz(rd.elicitation)
        elicit = {"steps": e["steps"].tolist(), "names": [str(n) for n in e["names"]],
                  "held_out": [str(h) for h in e["held_out"]], "joint": np.round(e["joint"], 3).tolist(),
                  "images": None}
        if "samples" in e:  # [K, E, H, n, 3, h, w]: one row per (elicitation, held-out class)
            s = e["samples"]
            elicit["images"] = [png_uri(tile(s[k].reshape(-1, *s.shape[3:]))) for k in range(len(s))]
        data["elicitation"] = elicit
    return data


SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById('explorer-data').textContent);
  const svg = document.getElementById('explorer-svg'), slider = document.getElementById('explorer-slider');
  const W = 380, M = 40;
  const X = v => M + v * (W - 2 * M), Y = v => W - M - v * (W - 2 * M);
  const colors = PALETTE;
  // SVG children written as markup inside the inline <svg>: the parser gives them the SVG namespace
  function el(tag, attrs, parent) {
    const p = parent || svg;
    const a = Object.keys(attrs).map(k => k + '="' + String(attrs[k]).replace(/"/g, '&quot;') + '"').join(' ');
    p.insertAdjacentHTML('beforeend', '<' + tag + ' ' + a + '></' + tag + '>');
    return p.lastElementChild;
  }
  el('rect', {x: M, y: M, width: W - 2 * M, height: W - 2 * M, fill: 'none', stroke: '#999'});
  const lab = (x, y, t, a, rot) => {
    const e = el('text', {x: x, y: y, 'font-size': 11, 'text-anchor': a || 'middle'});
    if (rot) e.setAttribute('transform', 'rotate(-90 ' + x + ' ' + y + ')');
    e.textContent = t;
  };
  lab(W / 2, W - 8, D.concepts[0] + ': P(value 1)');
  lab(14, W / 2, (D.concepts[1] || '') + ': P(value 1)', 'middle', true);
  const markers = D.classes.map((name, p) => {
    const c = D.held_out[p] ? '#d62728' : colors[p % colors.length];
    const pts = D.coords.map(q => X(q[p][0]) + ',' + Y(q[p][1] === undefined ? 0 : q[p][1])).join(' ');
    el('polyline', {points: pts, fill: 'none', stroke: c, 'stroke-width': D.held_out[p] ? 2.5 : 1.2,
                    'stroke-dasharray': D.held_out[p] ? '' : '4 3'});
    D.coords.forEach((q, k) => {  // hover a checkpoint of any trajectory: the slider jumps there
      const h = el('circle', {cx: X(q[p][0]), cy: Y(q[p][1] || 0), r: 5, fill: 'transparent', class: 'hover-point'});
      h.addEventListener('mouseenter', () => { slider.value = k; update(); });
    });
    lab(X(+name[0]), Y(+(name[1] || 0)) + (name[1] === '1' ? -8 : 16), name + (D.held_out[p] ? ' (held out)' : ''),
        name[0] === '1' ? 'end' : 'start');
    return el('circle', {r: 6, fill: c, stroke: '#000', class: 'cur-marker'});
  });
  function elicitIndex(step) {  // the elicitation's row of this checkpoint (-1: not elicited there)
    return D.elicitation ? D.elicitation.steps.indexOf(step) : -1;
  }
  function update() {
    const k = +slider.value, step = D.steps[k];
    document.getElementById('explorer-step').textContent = 'step ' + step + ' (checkpoint ' + (k + 1) + ' of ' + D.steps.length + ')';
    markers.forEach((m, p) => { m.setAttribute('cx', X(D.coords[k][p][0])); m.setAttribute('cy', Y(D.coords[k][p][1] || 0)); });
    document.getElementById('explorer-classes').src = D.class_images[k];
    let rows = '<tr><th>class</th>' + D.concepts.map(c => '<th>' + c + '</th>').join('') + '</tr>';
    D.classes.forEach((n, p) => { rows += '<tr><th>' + n + (D.held_out[p] ? ' (held out)' : '') + '</th>' +
      D.accuracy[k][p].map(v => '<td>' + v.toFixed(2) + '</td>').join('') + '</tr>'; });
    document.getElementById('explorer-acc').innerHTML = rows;
    const e = elicitIndex(step), box = document.getElementById('explorer-elicit');
    if (e >= 0) {
      const E = D.elicitation; let t = '<tr><th>elicitation</th>' + E.held_out.map(h => '<th>' + h + '</th>').join('') + '</tr>';
      E.names.forEach((n, i) => { t += '<tr><th>' + n + '</th>' + E.joint[e][i].map(v => '<td>' + v.toFixed(2) + '</td>').join('') + '</tr>'; });
      document.getElementById('explorer-joint').innerHTML = t;
      const img = document.getElementById('explorer-elicit-img');
      if (img && E.images) img.src = E.images[e];
      box.style.display = '';
    } else { box.style.display = 'none'; }
    const on = [];
    for (const h in D.onsets) for (const m in D.onsets[h]) {
      const s = D.onsets[h][m];
      on.push(h + ' ' + m + ': ' + (s === null ? 'never' : s + (s <= step ? ' (reached)' : '')));
    }
    for (const h in D.turn) if (D.turn[h] !== null) on.push(h + ' turn: ' + D.turn[h] + (D.turn[h] <= step ? ' (passed)' : ''));
    document.getElementById('explorer-onsets').textContent = on.join('; ');
  }
  slider.addEventListener('input', update);
  update();
})();
"""


def explorer_html(data: dict) -> str:
    """The explorer's HTML section (slider, SVG, images, tables) with its data and script inlined."""
    n = len(data["steps"])
    payload = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the inline JSON
    e = data["elicitation"]
    rows = ", ".join(e["names"]) if e else ""
    # an image without a source would count as a broken image: only when the run kept elicitation samples
    img = ("<img id='explorer-elicit-img' alt='elicitations' style='width:120px;image-rendering:pixelated'>"
           if e and e["images"] else "")
    return (
        "<h2>Explorer</h2><p>Drag the slider (or hover a trajectory) to see a checkpoint's generations, accuracies "
        "and the onsets reached by then.</p>"
        f"<input type='range' id='explorer-slider' min='0' max='{n - 1}' value='{n - 1}' style='width:100%'>"
        "<p id='explorer-step'></p><div class='figs'>"
        "<svg id='explorer-svg' width='380' height='380' viewBox='0 0 380 380'></svg>"
        "<div><p>Generations (one row per class, in order):</p>"
        "<img id='explorer-classes' alt='generations' style='width:240px;image-rendering:pixelated'>"
        "<table id='explorer-acc'></table></div>"
        "<div id='explorer-elicit'><p>Elicitations of the held-out class"
        + (f" (generations: one row each, held-out classes within: {html.escape(rows)})" if img else "") + ":</p>"
        f"{img}<table id='explorer-joint'></table></div></div><p id='explorer-onsets'></p>"
        f"<script type='application/json' id='explorer-data'>{payload}</script>"
        f"<script>{SCRIPT.replace('PALETTE', json.dumps(PALETTE))}</script>"
    )


SWEEP_SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById('sweep-explorer-data').textContent);
  const svg = document.getElementById('sweep-explorer-svg'), W = 380, M = 40;
  const X = v => M + v * (W - 2 * M), Y = v => W - M - v * (W - 2 * M);
  const el = (tag, attrs) => {  // markup inside the inline <svg>: the parser gives it the SVG namespace
    const a = Object.keys(attrs).map(k => k + '="' + String(attrs[k]).replace(/"/g, '&quot;') + '"').join(' ');
    svg.insertAdjacentHTML('beforeend', '<' + tag + ' ' + a + '></' + tag + '>');
    return svg.lastElementChild;
  };
  el('rect', {x: M, y: M, width: W - 2 * M, height: W - 2 * M, fill: 'none', stroke: '#999'});
  const t1 = el('text', {x: W / 2, y: W - 8, 'font-size': 11, 'text-anchor': 'middle'}); t1.textContent = D.concepts[0] + ': P(value 1)';
  const t2 = el('text', {x: 14, y: W / 2, 'font-size': 11, 'text-anchor': 'middle', transform: 'rotate(-90 14 ' + W / 2 + ')'});
  t2.textContent = (D.concepts[1] || '') + ': P(value 1)';
  D.runs.forEach((r, i) => {
    const pts = r.trajectory.map(q => X(q[0]) + ',' + Y(q[1] === undefined ? 0 : q[1])).join(' ');
    const line = el('polyline', {points: pts, fill: 'none', stroke: r.color, 'stroke-width': 2, class: 'run-line'});
    const box = document.getElementById('run-' + i);
    const show = () => { line.style.display = box.checked ? '' : 'none'; };
    box.addEventListener('change', show); show();
  });
})();
"""


def sweep_explorer_html(runs: list[dict], concepts: list[str], max_checked: int = 6) -> str:
    """A run picker for a sweep report: tick runs to overlay their held-out trajectories (first held-out class,
    first two concepts); the first `max_checked` runs start ticked."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    items = []
    for r in runs:
        held = [n for n, c in r["classes"].items() if c["held_out"]]
        if held and "trajectories" in r:
            items.append({"name": r["name"], "held_out": held[0],
                          "trajectory": np.round(np.asarray(r["trajectories"][held[0]])[:, :2], 3).tolist()})
    if not items:
        return ""
    for i, item in enumerate(items):
        item["color"] = matplotlib.colors.to_hex(cmap(i % 20))
    boxes = "".join(
        f"<label style='display:block;color:{it['color']}'><input type='checkbox' id='run-{i}'"
        f"{' checked' if i < max_checked else ''}> {html.escape(it['name'])} ({html.escape(it['held_out'])})</label>"
        for i, it in enumerate(items))
    payload = json.dumps({"runs": items, "concepts": concepts}).replace("</", "<\\/")
    return ("<h2>Compare runs</h2><p>Tick runs to overlay their held-out trajectories in concept space.</p>"
            "<div class='figs'><svg id='sweep-explorer-svg' width='380' height='380' viewBox='0 0 380 380'></svg>"
            f"<div style='max-height:380px;overflow:auto'>{boxes}</div></div>"
            f"<script type='application/json' id='sweep-explorer-data'>{payload}</script>"
            f"<script>{SWEEP_SCRIPT}</script>")
