"""The kube-proxy models' rulesets as typed records, and the one place where each record becomes text.

nftables: the objects of sigs.k8s.io/knftables (`types.go`: Table, Chain, Set, Map, Rule, Element) that
kube-proxy's nftables proxier adds to a `Transaction`, and `Op` for its flushes and deletes; `nft_input`
writes a transaction as knftables' `writeOperation` does (`objects.go`).

iptables: the lines kube-proxy's iptables proxier writes into its `utiliptables.LineBuffer`s (syncProxyRules:
`filterChains`, `filterRules`, `natChains`, `natRules`) and assembles into the `iptables-restore` input
(`iptablesData`: `*filter`, chains, rules, `COMMIT`, then the same for `*nat`); `Restore.text` writes it.

Each renderer writes a ruleset's text once, as the rendered ruleset is made, and never reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

# ----------------------------------------------------------------------------- nftables (knftables)

Verb = Literal["add", "flush", "delete"]


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # Go's %q, for the printable text of kube-proxy's comments


@dataclass(frozen=True, slots=True)
class Table:
    """The table itself (its family and name are the transaction's)."""

    comment: str | None = None

    def line(self, verb: Verb, table: str) -> str:
        """knftables `Table.writeOperation`."""
        body = f" {{ comment {_quoted(self.comment)} ; }}" if self.comment is not None and verb == "add" else ""
        return f"{verb} table {table}{body}"


@dataclass(frozen=True, slots=True)
class Chain:
    """A regular chain, or a base chain with its type, hook and priority."""

    name: str
    type: str | None = None
    hook: str | None = None
    priority: int | None = None
    comment: str | None = None

    def line(self, verb: Verb, table: str) -> str:
        """knftables `Chain.writeOperation`."""
        parts = []
        if verb == "add" and self.type is not None:
            parts.append(f" type {self.type} hook {self.hook} priority {self.priority} ;")
        if verb == "add" and self.comment is not None:
            parts.append(f" comment {_quoted(self.comment)} ;")
        body = f" {{{''.join(parts)} }}" if parts else ""
        return f"{verb} chain {table} {self.name}{body}"


@dataclass(frozen=True, slots=True)
class Set:
    """A named set: `type` is its key type (`ipv6_addr . inet_proto . inet_service`)."""

    keyword: ClassVar[str] = "set"
    name: str
    type: str
    comment: str | None = None

    def line(self, verb: Verb, table: str) -> str:
        """knftables `Set.writeOperation` (`Map.writeOperation` for a map)."""
        if verb != "add":
            return f"{verb} {self.keyword} {table} {self.name}"
        comment = f" comment {_quoted(self.comment)} ;" if self.comment is not None else ""
        return f"{verb} {self.keyword} {table} {self.name} {{ type {self.type} ;{comment} }}"


@dataclass(frozen=True, slots=True)
class Map(Set):
    """A named map: `type` is `KEY : VALUE` (`… : verdict` for a verdict map)."""

    keyword: ClassVar[str] = "map"


@dataclass(frozen=True, slots=True)
class RandomMap:
    """`numgen random mod N map|vmap { 0 : v0 , … }`: a Service picks an endpoint from an anonymous map.

    Every one is a set of its own in the kernel, named on creation by scanning the table's sets
    (`nf_tables_set_alloc_name`). A one-element anonymous set in a rule (`ip6 daddr { CIDR }`) is not
    one: nft turns it into a plain comparison (nft 1.0.6, `--debug=netlink`), so it stays rule text.
    """

    values: tuple[str, ...]
    verdicts: bool  # a verdict map (`vmap`: `goto endpoint-…`) or a data map (`map`: `ip . port`)

    def __str__(self) -> str:
        pairs = " , ".join(f"{i} : {v}" for i, v in enumerate(self.values))
        return f"numgen random mod {len(self.values)} {'vmap' if self.verdicts else 'map'} {{ {pairs} }}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule of `chain`: its expression, then the endpoint pick (if any), then its comment."""

    chain: str
    rule: str
    pick: RandomMap | None = None
    comment: str | None = None

    def line(self, verb: Verb, table: str) -> str:
        """knftables `Rule.writeOperation` (rules are only added here: a chain is flushed, not edited)."""
        expr = " ".join(x for x in (self.rule, str(self.pick) if self.pick else "") if x)
        comment = f" comment {_quoted(self.comment)}" if self.comment is not None else ""
        return f"{verb} rule {table} {self.chain} {expr}{comment}"


@dataclass(frozen=True, slots=True)
class Element:
    """An element of set or map `set`: its key's parts, and a map element's value."""

    set: str
    key: tuple[str, ...]
    value: tuple[str, ...] = ()
    comment: str | None = None

    @property
    def ident(self) -> tuple[str, tuple[str, ...]]:
        """What names the element in the kernel: its set and key (value and comment can change)."""
        return self.set, self.key

    def line(self, verb: Verb, table: str) -> str:
        """knftables `Element.writeOperation`: a delete names the key only."""
        out = f"{verb} element {table} {self.set} {{ {' . '.join(self.key)}"
        if verb == "add" and self.comment is not None:
            out += f" comment {_quoted(self.comment)}"
        if verb == "add" and self.value:
            out += f" : {' . '.join(self.value)}"
        return out + " }"


NftObject = Table | Chain | Set | Rule | Element


@dataclass(frozen=True, slots=True)
class Op:
    """A flush or delete in a transaction (knftables `Transaction.Flush`, `.Delete`). An add is the object
    itself (`Transaction.Add`): a full sync adds every object, and a wrapper each would double its records."""

    verb: Verb
    obj: NftObject

    def line(self, table: str) -> str:
        """The operation as a line of `nft -f` input; `table` is "family name"."""
        return self.obj.line(self.verb, table)


Item = NftObject | Op  # one operation of a transaction: an object (added), or an Op


def nft_line(table: str, item: Item) -> str:
    """One operation as a line of `nft -f` input on `table` ("family name")."""
    return item.line(table) if isinstance(item, Op) else item.line("add", table)


def nft_input(table: str, items: Iterable[Item]) -> str:
    """The `nft -f -` input of a transaction on `table`, as knftables' `Run` writes it."""
    return "\n".join(nft_line(table, x) for x in items) + "\n"


# ----------------------------------------------------------------------------- iptables (restore input)


@dataclass(frozen=True, slots=True)
class Declare:
    """`:CHAIN POLICY [0:0]`: declares a chain, which flushes it (`utiliptables.MakeChainLine`)."""

    chain: str
    policy: str = "-"  # a built-in chain's policy (ACCEPT); "-" for a user chain

    def line(self) -> str:
        """The declaration as restore input."""
        return f":{self.chain} {self.policy} [0:0]"


@dataclass(frozen=True, slots=True)
class Append:
    """`-A CHAIN ARGS`: a rule appended to `chain`; `args` as kube-proxy writes them (comments quoted)."""

    chain: str
    args: str

    def line(self) -> str:
        """The rule as restore input."""
        return f"-A {self.chain} {self.args}"


@dataclass(frozen=True, slots=True)
class DeleteChain:
    """`-X CHAIN`: deletes a chain that was declared (so flushed) before."""

    chain: str

    def line(self) -> str:
        """The deletion as restore input."""
        return f"-X {self.chain}"


@dataclass(frozen=True, slots=True)
class RestoreTable:
    """One table of the restore input: its chain declarations, then its rules and deletions in order."""

    name: str
    chains: tuple[Declare, ...]
    commands: tuple[Append | DeleteChain, ...]

    def lines(self) -> list[str]:
        """`*TABLE`, the declarations, the commands, `COMMIT`."""
        return [f"*{self.name}", *(c.line() for c in self.chains), *(c.line() for c in self.commands), "COMMIT"]


@dataclass(frozen=True, slots=True)
class Restore:
    """An `ip6tables-restore` input: its tables in order."""

    tables: tuple[RestoreTable, ...]

    @property
    def commands(self) -> int:
        """The rules and chain deletions written (kube-proxy's `filterRules` and `natRules` lines)."""
        return sum(len(t.commands) for t in self.tables)

    def chains(self) -> set[str]:
        """Every chain the input declares."""
        return {d.chain for t in self.tables for d in t.chains}

    def text(self) -> str:
        """The input as `ip6tables-restore` reads it."""
        return "\n".join([*(line for t in self.tables for line in t.lines()), ""])
