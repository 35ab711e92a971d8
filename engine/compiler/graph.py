"""A network's layer graph: each layer's sources filled in and checked, and an order in which
every layer follows the layers it reads."""
from __future__ import annotations

INPUT = "input"  # the name by which a layer's `inputs:` refers to the network's input


def _graph(spec, where, layers):
    """Fill in default sources (the previous layer); refuse a source that names nothing, a cycle,
    and a layer whose output nothing reads."""
    names = [layer.name for layer in layers]
    if INPUT in names:
        raise spec.error(f"{where}, layer {INPUT!r}", f"{INPUT!r} names the network's input; rename the layer")
    for n, layer in enumerate(layers):
        if not layer.inputs:
            layer.inputs = (names[n - 1] if n else INPUT,)
        for src in layer.inputs:
            if src != INPUT and src not in names:
                raise spec.error(f"{where}, layer {layer.name!r}, field 'inputs'",
                                 f"{src!r} names no layer of this network; valid are {[INPUT] + names}")
            if src == layer.name:
                raise spec.error(f"{where}, layer {layer.name!r}, field 'inputs'", "a layer cannot read its own output")
    read = {src for layer in layers for src in layer.inputs}
    for layer in layers[:-1]:
        if layer.name not in read:
            raise spec.error(f"{where}, layer {layer.name!r}", "its output feeds no layer; name it in a later "
                                                              "layer's inputs: or remove it (the last layer is "
                                                              "the network's output)")
    order(layers, spec, where)


def order(layers, spec=None, where=None) -> list:
    """The layers in an order where each follows its sources (listed order where it allows);
    a cycle is a SpecError naming the layers on it."""
    by_name = {layer.name: layer for layer in layers}
    done, out, visiting = set(), [], []

    def visit(layer):
        if layer.name in done:
            return
        if layer.name in visiting:
            cycle = visiting[visiting.index(layer.name):] + [layer.name]
            raise spec.error(f"{where}, layer {layer.name!r}, field 'inputs'",
                             f"the layers' inputs form a cycle ({' reads '.join(cycle)}); a layer may only "
                             "read layers that do not depend on it")
        visiting.append(layer.name)
        for src in layer.inputs:
            if src in by_name:
                visit(by_name[src])
        visiting.pop()
        done.add(layer.name)
        out.append(layer)

    for layer in layers:
        visit(layer)
    return out
