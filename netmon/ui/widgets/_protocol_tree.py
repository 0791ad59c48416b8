"""ProtocolTree: tshark's tree of one packet, collapsible as in Wireshark.

UI thread only. Every label is packet content (field values, names, request lines):
it is shown through ``safe_text``, capped, as a ``Text`` (never parsed as markup).
Sub-items are added when their parent is first expanded, so a packet of thousands of
items costs only its visible ones. ← collapses (or goes to the parent), → expands
(or goes to the first child), Enter and Space toggle, as Wireshark's keys do.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from netmon.core.link import DissectNode
from netmon.core.text import safe_text

#: Characters of one item's text on screen (tshark's own lines are rarely > 200).
LABEL_MAX = 300


def node_label(node: DissectNode, top: bool = False) -> Text:
    """An item's text made safe for the terminal; layers in bold."""
    return Text(safe_text(node.label, LABEL_MAX) or "(no text)", "bold" if top else "",
                no_wrap=True)


class ProtocolTree(Tree[DissectNode]):
    """Layers at the top level; the last layer (the packet's own payload, what one
    came for, as in termshark) is expanded, the others collapsed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "collapse_or_parent", "Collapse", show=False),
        Binding("right", "expand_or_child", "Expand", show=False),
    ]

    DEFAULT_CSS = """
    ProtocolTree {
        background: $surface;
        padding: 0;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("packet", id=id)
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = True

    def process_label(self, label: str | Text) -> Text:
        # Tree would read a str as markup ("[bold]" in a packet would style it).
        if isinstance(label, Text):
            return label
        return Text(safe_text(label, LABEL_MAX), no_wrap=True)

    def show_tree(self, nodes: tuple[DissectNode, ...]) -> None:
        """Replace the tree; the cursor goes to the last layer."""
        self.clear()
        last: TreeNode[DissectNode] | None = None
        for n, item in enumerate(nodes):
            final = n == len(nodes) - 1
            last = self._add(self.root, item, top=True)
            if final and item.children:
                self._fill(last)
                last.expand()
        self.root.expand()
        if last is not None:  # once the new lines are laid out
            self.call_after_refresh(self.move_cursor, last)

    def _add(self, parent: TreeNode[DissectNode], item: DissectNode,
             top: bool = False) -> TreeNode[DissectNode]:
        label = node_label(item, top)
        if item.children:
            return parent.add(label, item)
        return parent.add_leaf(label, item)

    def _fill(self, node: TreeNode[DissectNode]) -> None:
        """Add ``node``'s sub-items, once."""
        if node.children or node.data is None:
            return
        for child in node.data.children:
            self._add(node, child)

    def _on_tree_node_expanded(self, event: Tree.NodeExpanded[DissectNode]) -> None:
        self._fill(event.node)

    def action_collapse_or_parent(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.allow_expand:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)

    def action_expand_or_child(self) -> None:
        node = self.cursor_node
        if node is None or not node.allow_expand:
            return
        if not node.is_expanded:
            self._fill(node)
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])
