"""Contraction plans people can read: every contraction of a compiled network, as data and as text.

`collect(net, batch)` gathers each Run's `describe()` and opt_einsum's PathInfo into one plain document (its
shape: engine/compiler/plan_schema.py, which scripts/plan.py prints); `compare` sets two documents side by
side; `render_text` (100 columns) and `render_markdown` print them.  FLOPs, speed-ups and intermediate sizes
are PathInfo's; a step's own cost is opt_einsum's `flop_count` with the arguments contract_path gives it
(PathInfo keeps only the sum, which the steps must match).
"""
from __future__ import annotations

import textwrap

from opt_einsum.helpers import flop_count

from notation.equation import cost_line

from .plan_schema import SCHEMA

WIDTH = 100
FLOPS = ("opt_einsum's PathInfo counts: a step costs the extents of all its indices multiplied, "
         "times (operands - 1, at least 1), plus 1 if it sums an index (GEMM over b,i,j: 2*B*I*J)")


class PlanText(str):
    """A network's plans as text (`print` it); in a notebook, the markdown tables."""

    def __new__(cls, doc: dict):
        text = super().__new__(cls, render_text(doc))
        text.document = doc
        return text

    def _repr_markdown_(self) -> str:
        return render_markdown(self.document)


# -- collecting ----------------------------------------------------------------------------
def collect(net, batch: int = 64) -> dict:
    """The plan document of a network at a batch size, compiled as training runs it."""
    stages = net.compiled(batch)
    # eval mode's own equations (batch norm's running statistics), where a kind has them
    evals = {s.name: s.layer for s in net.compiled(batch, "eval")[:-1]
             if s.layer.equations is not s.layer.kind.forward}
    # loss_and_grads never runs the last activation's Jacobian: the loss gives dz directly (26)
    skip = stages[-2].activation if len(stages) > 1 else None
    blocks = []
    previous = "input"
    for s in stages:
        if s.name == "loss":
            parts = [("loss", "loss", s.layer)]
        else:
            parts = [(s.name, "layer", s.layer)]
            if s.activation is not None:
                parts.append((f"{s.name}.{s.activation.kind.name}", "activation", s.activation))
        for name, role, block in parts:
            contractions = _contractions(net.spec, block, name, block.forward_runs, block.backward_runs,
                                         block is not skip)
            contractions[len(block.forward_runs):len(block.forward_runs)] = [
                _contraction(net.spec, block, name, "update", u.state, u.run, True) for u in block.update_runs]
            if role == "layer" and s.name in evals:
                contractions += [_contraction(net.spec, evals[s.name], name, "eval", f.result, f.run, False)
                                 for f in evals[s.name].forward_runs]
            sources = [src for _, src in s.sources] if role == "layer" else []
            entry = {"name": name, "role": role, "kind": block.kind.name, "cites": block.kind.cites or "",
                     "where": block.where, "dtype": block.dtype.name, "algorithm": None,
                     "inputs": sources, "chained": sources == [previous],
                     "random": [{"name": n, "shape": list(shape), "bernoulli": p} for n, shape, p in block.random],
                     "state": [{"name": n, "shape": list(shape)} for n, shape in block.state_shapes.items()],
                     "contractions": contractions}
            if block.algorithm is not None:
                definition = _contractions(net.spec, block, name, *block.definition, block is not skip)
                entry["algorithm"] = {
                    "name": block.algorithm, "cites": block.chain["cites"],
                    "chosen": (f"auto, by {block.chain['auto'].get('how', 'modelled')} cost" if "auto" in block.chain
                               else "named in the spec"),
                    "modelled": [{"algorithm": k, "seconds": v} for k, v in block.chain.get("auto", {}).items()
                                 if k not in ("batch", "how")],
                    "modelled_at_batch": block.chain.get("auto", {}).get("batch"),
                    "constants": [{"name": c, "shape": list(v.shape)} for c, v in block.constants.items()],
                    "step_flops": sum(c["optimized_flops"] for c in entry["contractions"] if c["in_training_step"]),
                    "definition_step_flops": sum(c["optimized_flops"] for c in definition if c["in_training_step"])}
            blocks.append(entry)
        previous = s.name
    doc = {"schema": SCHEMA, "spec": str(net.spec.file), "network": net.name, "batch": batch,
           "optimize": str(net.optimize), "dtype": net.dtype.name, "itemsize": net.dtype.itemsize,
           "flops": FLOPS, "blocks": blocks}
    doc["totals"] = _totals(blocks, batch)
    return doc


def _contractions(spec, block, name, forward_runs, backward_runs, in_step) -> list:
    runs = [("forward", f.result, f.run, True) for f in forward_runs]
    runs += [("backward", b.result, b.run, in_step) for b in backward_runs]
    programs = block.row_programs(forward_runs, backward_runs)  # in a network, several equations in one loop
    return [dict(_contraction(spec, block, name, *r), row_program=programs[r[:2]].describe() if r[:2] in programs
                 else None) for r in runs]


def _contraction(spec, block, block_name, pass_, writes, run, in_step) -> dict:
    info = run.describe(block.dtype.itemsize)
    infos = run.path_info
    infos = list(infos) if isinstance(infos, list) else [infos]
    size = block.dtype.itemsize
    products = []
    for p in info["products"]:
        path_info = infos.pop(0) if p["steps"] else None
        products.append(_product(p, path_info, size))
    if run.copies and pass_ != "update":  # a block's forward and backward take the operand itself (layer.py)
        products[0]["strategy"] = dict(products[0]["strategy"], runs=products[0]["strategy"]["runs"]
                                       + "; in a network, the operand's own memory where C-ordered: no copy")
    naive = sum(p["naive_flops"] for p in products)
    opt = sum(p["optimized_flops"] for p in products)
    largest = max((p["largest_intermediate"]["elements"] for p in products), default=0)
    return {"id": f"{block_name}/{pass_}/{writes}", "pass": pass_, "writes": writes,
            "source": info["source"], "equation": info["equation"], "cite": spec.cite(run.equation),
            "result_shape": info["result_shape"], "in_training_step": in_step,
            "strategies": [p["strategy"]["name"] for p in products], "products": products, "row_program": None,
            "modelled_s": sum(p["cost"]["modelled_s"] for p in info["products"]),
            "bound_s": sum(p["cost"]["bound_s"] for p in info["products"]),
            "naive_flops": naive, "optimized_flops": opt,
            "largest_intermediate": {"elements": largest, "bytes": largest * size}}


def _product(p, path_info, itemsize) -> dict:
    steps = []
    if path_info is not None:
        for n, (inds, removed, einsum, _, blas) in enumerate(path_info.contraction_list):
            touched = set(einsum.split("->")[0].replace(",", ""))
            # the cost contract_path gives this step (PathInfo keeps only the sum)
            steps.append({"einsum": einsum, "kind": blas or "einsum", "runs": p["steps"][n]["runs"],
                          "contracted": sorted(removed),
                          "scaling": int(path_info.scale_list[n]),
                          "flops": flop_count(touched, bool(removed), len(inds), path_info.size_dict),
                          "elements": int(path_info.size_list[n])})
        if sum(s["flops"] for s in steps) != p["optimized_flops"]:
            for s in steps:
                s["flops"] = None
    largest = p["largest_intermediate"]
    return {"einsum": p["einsum"], "runs": path_info.eq if path_info is not None else None,
            "strategy": p["strategy"],
            "path": [list(c) for c in path_info.path] if path_info is not None else [],
            "scale": p["scale"], "views": p["views"], "nested": p["nested"], "fold": p["fold"], "cost": p["cost"],
            "steps": steps, "naive_flops": p["naive_flops"], "optimized_flops": p["optimized_flops"],
            "speedup": p["speedup"], "largest_intermediate": {"elements": largest, "bytes": largest * itemsize}}


def _totals(blocks, batch) -> dict:
    every = [(b, c) for b in blocks for c in b["contractions"]]
    counted = [(b, c) for b, c in every if c["in_training_step"]]
    fwd = sum(c["optimized_flops"] for _, c in counted if c["pass"] in ("forward", "update"))
    step = fwd + (bwd := sum(c["optimized_flops"] for _, c in counted if c["pass"] == "backward"))

    def share(n):
        return n / step if step else 0.0

    by_block = []
    for b in blocks:
        f = sum(c["optimized_flops"] for c in b["contractions"]
                if c["in_training_step"] and c["pass"] in ("forward", "update"))
        k = sum(c["optimized_flops"] for c in b["contractions"] if c["in_training_step"] and c["pass"] == "backward")
        by_block.append({"block": b["name"], "forward_flops": f, "backward_flops": k, "share": share(f + k)})
    ranked = sorted(counted, key=lambda bc: -bc[1]["optimized_flops"])
    largest = [{"id": c["id"], "source": c["source"], "cite": c["cite"], "optimized_flops": c["optimized_flops"],
                "share": share(c["optimized_flops"])} for _, c in ranked[:5]]
    return {"forward_flops": fwd, "backward_flops": bwd, "step_flops": step,
            "per_image": {"forward": fwd / batch, "backward": bwd / batch, "step": step / batch},
            "by_block": by_block, "largest": largest, "dominant": largest[0]["id"] if largest else None,
            "not_in_step": [{"id": c["id"], "optimized_flops": c["optimized_flops"],
                             "reason": "eval mode's forward: it runs in evaluation and inference"
                             if c["pass"] == "eval" else "the loss's Jacobian gives dz of the last layer directly"}
                            for _, c in every if not c["in_training_step"]]}


def compare(a: dict, b: dict) -> dict:
    """Where two plan documents of one network (two optimisers) choose different paths."""
    theirs = {c["id"]: c for blk in b["blocks"] for c in blk["contractions"]}
    products = same = 0
    differences = []
    for blk in a["blocks"]:
        for c in blk["contractions"]:
            other = theirs.get(c["id"])
            if other is None:
                continue
            for n, (p, q) in enumerate(zip(c["products"], other["products"])):
                products += 1
                if p["path"] == q["path"] and [s["einsum"] for s in p["steps"]] == [s["einsum"] for s in q["steps"]]:
                    same += 1
                    continue
                differences.append({"id": c["id"], "term": n + 1, "terms": len(c["products"]),
                                    "source": c["source"], "runs": p["runs"],
                                    "a": _side(p), "b": _side(q)})
    return {"optimize": [a["optimize"], b["optimize"]], "products": products, "same": same,
            "differences": differences,
            "step_flops": [a["totals"]["step_flops"], b["totals"]["step_flops"]]}


def _side(p) -> dict:
    return {"path": p["path"], "steps": [{"einsum": s["einsum"], "kind": s["kind"], "flops": s["flops"]}
                                         for s in p["steps"]],
            "optimized_flops": p["optimized_flops"], "largest_intermediate": p["largest_intermediate"]}


# -- shared formatting ---------------------------------------------------------------------
def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _bytes(n) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _shape(shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def _path(path) -> str:
    return "[" + ", ".join("(" + ", ".join(map(str, c)) + ("," if len(c) == 1 else "") + ")" for c in path) + "]"


def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def _operands(p) -> list:
    """(tag, text) per operand: views with their indices, shape and kind; nested functions and maxima."""
    out = [("view", f"{v['tensor']} ({','.join(v['indices'])}) {_shape(v['shape'])}, {v['kind']}")
           for v in p["views"]]
    for n in p["nested"]:
        what = {"call": f"{n['function']}(...)", "max": "max[...]", "eye": "delta"}.get(n["kind"], n["kind"])
        how = f" ({', '.join(n['strategies'])})" if n["strategies"] else ""
        out.append(("nested", f"{what} ({','.join(n['indices'])}) {_shape(n['shape'])}, computed first{how}"))
    return out


def _fold(f) -> str:
    where = f"({','.join(f['indices'])}) {_shape(f['shape'])}"
    if f["kind"] == "in place":
        return f"written in place, {where}"
    if f["kind"] == "strided add":
        return f"scattered by one strided add to {where}"
    if f["kind"] == "strided write":
        return f"written through one strided view of {where}, each entry once (no zeroing)"
    return f"scattered to {where}, slice-add looped over {','.join(f['loop'])} ({f['adds']} adds)"


def _label(c) -> str:
    return f"{c['pass']} {c['writes']}"


# -- text ------------------------------------------------------------------------------------
def render_text(doc: dict, width: int = WIDTH) -> str:
    """The document for a terminal: one block per contraction, then totals; lines fit `width`."""
    lines = [f"Contraction plans: network {doc['network']!r} ({doc['spec']}), batch {doc['batch']}, "
             f"optimize {doc['optimize']!r}, {doc['dtype']}",
             f"FLOPs: {doc['flops']}."]
    for b in doc["blocks"]:
        head = f"== {b['name']}: {b['kind']} {b['cites']} ".replace("  ", " ")
        lines += ["", head + "=" * max(0, width - len(head))]
        a = b["algorithm"]
        if a is not None:
            lines.append(f"algorithm {a['name']} ({a['cites']}), {a['chosen']}: {_n(a['step_flops'])} flops a "
                         f"training step in place of the definition's {_n(a['definition_step_flops'])}")
            if a["modelled"]:
                how = ("timed on this machine, forward and backward" if "timed" in a["chosen"]
                       else "modelled: each product's road on the machine's rates")
                lines.append(f"  at batch {a['modelled_at_batch']} ({how}): " + ", ".join(
                    f"{m['algorithm']} {1e3 * m['seconds']:.2f} ms" for m in a["modelled"]))
            if a["constants"]:
                lines.append("  constants " + ", ".join(f"{c['name']} {_shape(c['shape'])}" for c in a["constants"]))
        if b["role"] == "layer" and not b["chained"]:
            lines.append(f"  reads   {', '.join(b['inputs'])}" + (" (their gradients summed back into each)"
                                                                 if len(b["inputs"]) > 1 else ""))
        for r in b["random"]:
            lines.append(f"  random  {r['name']} {_shape(r['shape'])}: 1 with probability {r['bernoulli']:g}, else 0; "
                         "drawn each training step")
        if b["state"]:
            lines.append("  state   " + ", ".join(f"{t['name']} {_shape(t['shape'])}" for t in b["state"])
                         + ": not trained; updated each training step, read in eval, kept in checkpoints")
        for c in b["contractions"]:
            lines += _text_contraction(c, width)
    lines += [""] + _text_totals(doc)
    if "compare" in doc:
        lines += [""] + _text_compare(doc["compare"], width)
    return "\n".join(_fit(lines, width))


def _text_contraction(c, width) -> list:
    label = f"{_label(c):<12} "  # a long name (a derived term, dz_1) still stands apart from its equation
    eq = f"{label}{c['source']}"
    cite = "  ".join(filter(None, [c["cite"], "" if c["in_training_step"] else "[not run in a training step]"]))
    if len(eq) + 2 + len(cite) <= width:
        lines = [f"{eq}{cite:>{width - len(eq)}}" if cite else eq]
    else:
        lines = [eq, f"{'':13}{cite}"]
    lines += [f"  runs    in a network as one of {c['row_program']}"] if c.get("row_program") else []
    for n, p in enumerate(c["products"]):
        if len(c["products"]) > 1:
            scale = f", scale {p['scale']:g}" if p["scale"] != 1 else ""
            lines.append(f"  term {n + 1} of {len(c['products'])}{scale}")
        lines.append(f"  strategy {p['strategy']['name']}: {p['strategy']['runs']}")
        lines += [f"  {tag:<8}{text}" for tag, text in _operands(p)]
        if not p["steps"]:
            lines.append("  einsum  (no operands: a constant)")
        else:
            lines.append(f"  einsum  {p['runs']}, opt_einsum path {_path(p['path'])}")
        for k, s in enumerate(p["steps"]):
            # one line per pairwise step: "path" for the first, "then" for the ones after it
            flops = f"; {_n(s['flops'])} flops" if s["flops"] is not None else ""
            sums = f", sums {','.join(s['contracted'])}" if s["contracted"] else ""
            out = f", {_n(s['elements'])} el out" if len(p["steps"]) > 1 else ""
            runs = f" -> {s['runs']}" if s["runs"] else ""
            lines.append(f"  {'then' if k else 'path'} {s['einsum']} [{s['kind']}{runs}]{flops}{sums}{out}")
        li = p["largest_intermediate"]
        # opt_einsum's speed-up over the naive sum means something where its path does better than it
        path = (f" (naive {_n(p['naive_flops'])}, speed-up {p['speedup']:.2g}x)"
                if p["naive_flops"] > p["optimized_flops"] else "")
        lines.append(f"  cost    {_n(p['optimized_flops'])} flops{path}; largest {_n(li['elements'])} el, "
                     f"{_bytes(li['bytes'])}")
        lines.append(f"  result  {_fold(p['fold'])}")
        lines.append("  time    " + cost_line(p["cost"]))
    return lines


def _text_totals(doc) -> list:
    t = doc["totals"]
    lines = [f"== totals at batch {doc['batch']} " + "=" * (WIDTH - 20 - len(str(doc["batch"]))),
             f"{'block':<28}{'forward FLOPs':>20}{'backward FLOPs':>20}{'share':>10}"]
    for r in t["by_block"]:
        lines.append(f"{r['block']:<28}{_n(r['forward_flops']):>20}{_n(r['backward_flops']):>20}"
                     f"{_pct(r['share']):>10}")
    lines += ["", f"{'':<28}{'per step':>20}{'per image':>20}"]
    for key, name in (("forward", "forward"), ("backward", "backward"), ("step", "training step")):
        lines.append(f"{name:<28}{_n(t[key + '_flops']):>20}{_n(t['per_image'][key]):>20}")
    lines += ["", "largest contractions (share of a training step):"]
    for n, c in enumerate(t["largest"]):
        head = f"  {n + 1}. {c['id']} {c['cite']}"
        lines.append(f"{head:<60}{_n(c['optimized_flops']):>20}{_pct(c['share']):>10}")
    if t["dominant"]:
        lines.append(f"dominant: {t['dominant']}")
    for c in t["not_in_step"]:
        lines.append(f"not counted: {c['id']} ({_n(c['optimized_flops'])} flops): {c['reason']}")
    return lines


def _text_compare(cmp, width) -> list:
    a, b = cmp["optimize"]
    head = f"== optimize {a!r} vs {b!r} "
    lines = [head + "=" * max(0, width - len(head)),
             f"same path for {cmp['same']} of {cmp['products']} products; a training step costs "
             f"{_n(cmp['step_flops'][0])} vs {_n(cmp['step_flops'][1])} flops"]
    col = (width - 14) // 2
    for d in cmp["differences"]:
        term = f", term {d['term']} of {d['terms']}" if d["terms"] > 1 else ""
        lines += ["", f"{d['id']}{term}: {d['runs']}",
                  f"{'':14}{a:<{col}}{b:<{col}}",
                  f"{'  path':<14}{_path(d['a']['path']):<{col}}{_path(d['b']['path']):<{col}}"]
        for k in range(max(len(d["a"]["steps"]), len(d["b"]["steps"]))):
            cells = []
            for side in (d["a"], d["b"]):
                s = side["steps"][k] if k < len(side["steps"]) else None
                cells.append(f"{s['kind']} {s['einsum']}" if s else "")
            lines.append(f"{'  step ' + str(k + 1):<14}{cells[0]:<{col}}{cells[1]:<{col}}")
        lines.append(f"{'  flops':<14}{_n(d['a']['optimized_flops']):<{col}}{_n(d['b']['optimized_flops']):<{col}}")
        la, lb = (f"{_n(s['largest_intermediate']['elements'])} el, {_bytes(s['largest_intermediate']['bytes'])}"
                  for s in (d["a"], d["b"]))
        lines.append(f"{'  largest':<14}{la:<{col}}{lb:<{col}}")
    return [line.rstrip() for line in lines]


def _fit(lines, width) -> list:
    """Wrap any line longer than width (a long custom equation), indenting its continuation."""
    out = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=True,
                             break_on_hyphens=False)
    return out


def _algorithm_note(b) -> str:
    a = b["algorithm"]
    if a is None:
        return ""
    return (f", algorithm {a['name']}: {_n(a['step_flops'])} FLOPs a step, "
            f"the definition {_n(a['definition_step_flops'])}")


# -- markdown ----------------------------------------------------------------------------------
def render_markdown(doc: dict) -> str:
    """The document as GitHub markdown: one table row per product, then the totals tables."""
    def code(s):
        return f"`{s}`".replace("|", "\\|") if s else ""

    out = [f"## Contraction plans: network `{doc['network']}`, batch {doc['batch']}, optimize "
           f"`{doc['optimize']}`, {doc['dtype']}", "", f"Spec `{doc['spec']}`. FLOPs: {doc['flops']}.", "",
           "| block | pass | equation | cite | strategy | lowering | einsum, path | steps | FLOPs | naive "
           "| speed-up | largest intermediate |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for b in doc["blocks"]:
        for c in b["contractions"]:
            for n, p in enumerate(c["products"]):
                first = n == 0
                term = f" (term {n + 1} of {len(c['products'])})" if len(c["products"]) > 1 else ""
                outside = "" if c["in_training_step"] else "(not run in a training step)"
                cite = " ".join(filter(None, [c["cite"], outside]))
                lowering = "<br>".join([f"{tag} {text}" for tag, text in _operands(p)] + [_fold(p["fold"])])
                steps = "<br>".join(f"{s['kind']} {code(s['einsum'])}" + (f" → {s['runs']}" if s["runs"] else "")
                                    for s in p["steps"])
                strategy = f"**{p['strategy']['name']}**: {p['strategy']['runs']}"
                li = p["largest_intermediate"]
                out.append(" | ".join([
                    "", f"{b['name']} ({b['kind']}{_algorithm_note(b) if c is b['contractions'][0] else ''})"
                    if first else "", code(c["writes"]) + " " + c["pass"],
                    ((code(c["source"]) if first else "") + term).strip(), cite if first else "", strategy,
                    lowering,
                    f"{code(p['runs'])} {_path(p['path'])}" if p["runs"] else "", steps,
                    _n(p["optimized_flops"]), _n(p["naive_flops"]), f"{p['speedup']:.2g}x",
                    f"{_n(li['elements'])} ({_bytes(li['bytes'])})", ""]).strip())
    t = doc["totals"]
    out += ["", f"### Totals at batch {doc['batch']}", "",
            "| block | forward FLOPs | backward FLOPs | share of a step |", "| --- | ---: | ---: | ---: |"]
    out += [f"| {r['block']} | {_n(r['forward_flops'])} | {_n(r['backward_flops'])} | {_pct(r['share'])} |"
            for r in t["by_block"]]
    out += ["", "| | per training step | per image |", "| --- | ---: | ---: |"]
    out += [f"| {name} | {_n(t[key + '_flops'])} | {_n(t['per_image'][key])} |"
            for key, name in (("forward", "forward"), ("backward", "backward"), ("step", "training step"))]
    out += ["", "| largest contractions | cite | FLOPs | share of a step |", "| --- | --- | ---: | ---: |"]
    out += [f"| {c['id']} | {c['cite']} | {_n(c['optimized_flops'])} | {_pct(c['share'])} |" for c in t["largest"]]
    for c in t["not_in_step"]:
        out += ["", f"Not counted: {c['id']} ({_n(c['optimized_flops'])} FLOPs): {c['reason']}."]
    if "compare" in doc:
        cmp = doc["compare"]
        a, b = cmp["optimize"]
        out += ["", f"### optimize `{a}` vs `{b}`", "",
                f"Same path for {cmp['same']} of {cmp['products']} products; a training step costs "
                f"{_n(cmp['step_flops'][0])} vs {_n(cmp['step_flops'][1])} FLOPs."]
        if cmp["differences"]:
            out += ["", f"| contraction | einsum | `{a}` path | `{a}` FLOPs | `{b}` path | `{b}` FLOPs |",
                    "| --- | --- | --- | ---: | --- | ---: |"]
            for d in cmp["differences"]:
                term = f" (term {d['term']})" if d["terms"] > 1 else ""
                out.append(f"| {d['id']}{term} | {code(d['runs'])} | {_path(d['a']['path'])} | "
                           f"{_n(d['a']['optimized_flops'])} | {_path(d['b']['path'])} | "
                           f"{_n(d['b']['optimized_flops'])} |")
    return "\n".join(out)
