"""Column-level lineage of views, read from the server's own records rather than by parsing SQL.

A view's `_RETURN` rule (pg_rewrite.ev_action) is the parsed query as a node tree. Each output
column's target entry names its origin (`resorigtbl`, `resorigcol`) when it is a plain column of a
table or view, followed through joins and subqueries by the server itself; a computed column's
expression holds the Vars it reads. pg_depend lists every column the query reads anywhere (joins,
filters), which gives the edges of no one output column.
"""

from __future__ import annotations

from collections.abc import Iterator

_VIEW_RULES_SQL = """
SELECT r.ev_class, r.ev_action::text FROM pg_rewrite r
 WHERE r.ev_class = ANY(%(views)s::oid[]) AND r.rulename = '_RETURN'
"""

_VIEW_DEPENDENCIES_SQL = """
SELECT DISTINCT r.ev_class, d.refobjid, d.refobjsubid FROM pg_rewrite r
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
 WHERE r.ev_class = ANY(%(views)s::oid[]) AND r.rulename = '_RETURN'
   AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.refobjid <> r.ev_class
"""

_KEPT_VIEWS_SQL = "SELECT k.oid FROM kept k WHERE k.relkind IN ('v', 'm')"

RELATION_RTE = "0"  # RTE_RELATION in every supported version's RTEKind
JOIN_RTE = "2"  # RTE_JOIN


def _tokens(text: str) -> list[str]:
    """Split a node tree's text into tokens as the server's pg_strtok does: brackets, or runs up to a space."""
    tokens = []
    position, length = 0, len(text)
    while position < length:
        char = text[position]
        if char in " \t\n":
            position += 1
        elif char in "(){}":
            tokens.append(char)
            position += 1
        else:
            end = position
            while end < length and text[end] not in " \t\n(){}":
                end += 2 if text[end] == "\\" else 1
            tokens.append(text[position:end])
            position = end
    return tokens


def parse_node_tree(text: str):
    """Parse a node tree into dicts (a `{NODE :field value ...}`, its type under "") and lists (`(...)`)."""
    tokens = _tokens(text)

    def value(position: int):
        token = tokens[position]
        if token == "{":
            node = {"": tokens[position + 1]}
            position += 2
            while tokens[position] != "}":
                field = tokens[position]
                position += 1
                parts = []
                while tokens[position] != "}" and not tokens[position].startswith(":"):
                    part, position = value(position)
                    parts.append(part)
                node[field] = parts[0] if len(parts) == 1 else parts
            return node, position + 1
        if token == "(":
            items = []
            position += 1
            while tokens[position] != ")":
                item, position = value(position)
                items.append(item)
            return items, position + 1
        return token, position + 1

    return value(0)[0]


def _vars(node) -> Iterator[dict]:
    """Yield the Vars of an expression at its own query level (not inside a sub-select)."""
    if isinstance(node, dict):
        if node.get("") == "VAR":
            yield node
            return
        if node.get("") == "QUERY":
            return
        for field, child in node.items():
            if field:
                yield from _vars(child)
    elif isinstance(node, list):
        for child in node:
            yield from _vars(child)


def _relation_columns(var: dict, rtable: list, depth: int = 0) -> Iterator[tuple[int, int]]:
    """Yield the (relation oid, column number) a Var of the top query reads, through join aliases."""
    if var.get(":varlevelsup") != "0" or depth > 32:
        return
    index, attnum = int(var[":varno"]) - 1, int(var[":varattno"])
    if not 0 <= index < len(rtable) or attnum <= 0:
        return
    entry = rtable[index]
    if entry.get(":rtekind") == RELATION_RTE:
        yield int(entry[":relid"]), attnum
    elif entry.get(":rtekind") == JOIN_RTE and isinstance(entry.get(":joinaliasvars"), list):
        aliases = entry[":joinaliasvars"]
        if attnum <= len(aliases):
            for inner in _vars(aliases[attnum - 1]):
                yield from _relation_columns(inner, rtable, depth + 1)


def view_edges(view: int, action: str) -> set[tuple[int, int, int, int, str]]:
    """Return the (view, view column, source, source column, kind) edges of one view's `_RETURN` rule."""
    queries = parse_node_tree(action)
    query = queries[0] if isinstance(queries, list) and queries else None
    if not isinstance(query, dict):
        return set()
    rtable = query.get(":rtable") if isinstance(query.get(":rtable"), list) else []
    targets = query.get(":targetList") if isinstance(query.get(":targetList"), list) else []
    edges = set()
    for entry in targets:
        if not isinstance(entry, dict) or entry.get(":resjunk") == "true":
            continue
        column = int(entry[":resno"])
        origin, origin_column = int(entry.get(":resorigtbl", "0")), int(entry.get(":resorigcol", "0"))
        if origin and origin_column:
            edges.add((view, column, origin, origin_column, "direct"))
            continue
        for var in _vars(entry.get(":expr")):
            for source, source_column in _relation_columns(var, rtable):
                edges.add((view, column, source, source_column, "expression"))
    return edges


def lineage_params(cur, kept_sql: str, params: dict) -> dict:
    """Return the lineage stream's bound edge arrays for the views discovery keeps."""
    cur.execute(kept_sql + _KEPT_VIEWS_SQL, params)
    views = [row[0] for row in cur.fetchall()]
    cur.execute(_VIEW_RULES_SQL, {"views": views})
    edges: set[tuple[int, int, int, int, str]] = set()
    for view, action in cur.fetchall():
        edges |= view_edges(view, action)
    cur.execute(_VIEW_DEPENDENCIES_SQL, {"views": views})
    per_column = {(view, source, column) for view, _, source, column, _ in edges}
    for view, source, column in cur.fetchall():
        if (view, source, column) not in per_column:
            edges.add((view, 0, source, column, "query"))
    ordered = sorted(edges)
    return {
        "lineage_views": [edge[0] for edge in ordered],
        "lineage_view_columns": [edge[1] for edge in ordered],
        "lineage_sources": [edge[2] for edge in ordered],
        "lineage_source_columns": [edge[3] for edge in ordered],
        "lineage_kinds": [edge[4] for edge in ordered],
    }
