//! Products of adjacent row ranges of one parameter matrix with one vector
//! become one product of the rows they cover, sliced.
//!
//! Input: a step as built. A cell that slices one weight matrix per gate
//! (a GRU's `W_hr @ h`, `W_hz @ h`, `W_hn @ h`, written as slices of
//! `weight_hh`) has one `Slice(param, a, b) @ v` per gate, and each use of
//! a leaf (`weight_hh`, `h`) is a node of its own.
//!
//! Output: when some products merge, every group of two or more products of
//! one parameter with one vector whose row ranges tile one range exactly is
//! a single product (of the whole matrix, or of one slice of it), and each
//! former product is a slice of that result; every parameter, state and
//! input is then one node. When nothing merges, the step is unchanged.
//! The former products' matrix slices are left unread, for
//! `eliminate_dead`.
//!
//! After: the row-range products of one parameter with one vector are
//! either one product (when there were two or more and their ranges tile
//! one range) or as the cell wrote them.
//!
//! Why: one larger matrix product per step runs faster than several small
//! ones, and no value changes: each output element is the same inner
//! product.

use crate::ir::{Node, Op, Shape, Step, ValueId};

use super::map_operands;

/// A product of rows `start..end` of a parameter matrix with a vector.
#[derive(Debug, Clone, Copy)]
struct RowProduct {
    product: ValueId,
    start: usize,
    end: usize,
}

/// Products of row ranges of one parameter with one vector, by start.
#[derive(Debug, Clone)]
struct Merge {
    param: ValueId,
    vector: ValueId,
    members: Vec<RowProduct>,
}

impl Merge {
    fn start(&self) -> usize {
        self.members[0].start
    }

    fn end(&self) -> usize {
        self.members[self.members.len() - 1].end
    }
}

/// Products of adjacent row ranges of one parameter matrix with one vector
/// (a GRU's `W_hr @ h`, `W_hz @ h`, `W_hn @ h`, written as slices of
/// `weight_hh`) become one product of the rows they cover, sliced: one
/// larger matrix product per step instead of several small ones. The
/// values are the same (each output element is the same inner product).
pub(in crate::ir) fn merge_row_products(step: Step) -> Step {
    // Leaves are written once per use (`weight_hh` and `h` three times in
    // a GRU): each leaf's first occurrence stands for the others.
    let mut first_of_leaf: std::collections::HashMap<(u8, usize), ValueId> =
        std::collections::HashMap::new();
    let canonical: Vec<ValueId> = step
        .nodes
        .iter()
        .enumerate()
        .map(|(idx, node)| {
            let id = ValueId(idx as u32);
            let key = match node.op {
                Op::Param(param) => (0, param.0 as usize),
                Op::State(k) => (1, k),
                Op::Input(k) => (2, k),
                _ => return id,
            };
            *first_of_leaf.entry(key).or_insert(id)
        })
        .collect();
    // Products `Slice(param, a, b) @ v`, grouped by (param, v).
    let mut groups: Vec<Merge> = Vec::new();
    for (idx, node) in step.nodes.iter().enumerate() {
        let Op::MatVec(matrix, vector) = node.op else {
            continue;
        };
        let Op::Slice(param, start, end) = step.node(matrix).op else {
            continue;
        };
        if !matches!(step.node(param).op, Op::Param(_)) {
            continue;
        }
        let (param, vector) = (canonical[param.index()], canonical[vector.index()]);
        let member = RowProduct {
            product: ValueId(idx as u32),
            start,
            end,
        };
        match groups
            .iter_mut()
            .find(|group| (group.param, group.vector) == (param, vector))
        {
            Some(group) => group.members.push(member),
            None => groups.push(Merge {
                param,
                vector,
                members: vec![member],
            }),
        }
    }
    // Keep groups of two or more whose row ranges tile one range exactly.
    let merges: Vec<Merge> = groups
        .into_iter()
        .filter_map(|mut group| {
            group.members.sort_by_key(|member| member.start);
            let adjacent = group
                .members
                .windows(2)
                .all(|pair| pair[0].end == pair[1].start);
            (group.members.len() >= 2 && adjacent).then_some(group)
        })
        .collect();
    if merges.is_empty() {
        return step;
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(step.nodes.len() + 2 * merges.len());
    let mut value_map: Vec<ValueId> = Vec::with_capacity(step.nodes.len());
    // For each merge, the id of its product once emitted.
    let mut products: Vec<Option<ValueId>> = vec![None; merges.len()];
    for (idx, node) in step.nodes.iter().enumerate() {
        let id = ValueId(idx as u32);
        let found = merges.iter().enumerate().find_map(|(merge_idx, merge)| {
            merge
                .members
                .iter()
                .find(|member| member.product == id)
                .map(|member| (merge_idx, member.start))
        });
        let Some((merge_idx, member_start)) = found else {
            if canonical[idx] != id {
                // A repeated leaf: the first occurrence is already there.
                value_map.push(value_map[canonical[idx].index()]);
                continue;
            }
            let op = map_operands(node.op.clone(), |operand| value_map[operand.index()]);
            nodes.push(Node { op, ..node.clone() });
            value_map.push(ValueId((nodes.len() - 1) as u32));
            continue;
        };
        let merge = &merges[merge_idx];
        let (param, vector) = (&merge.param, &merge.vector);
        let (start, end) = (&merge.start(), &merge.end());
        let product = match products[merge_idx] {
            Some(product) => product,
            None => {
                // The first member in evaluation order: the merged product
                // goes here, after the parameter and the vector.
                let Shape::Matrix(rows, cols) = step.node(*param).shape else {
                    unreachable!("a sliced parameter under `@` is a matrix")
                };
                let matrix = if (*start, *end) == (0, rows) {
                    value_map[param.index()]
                } else {
                    nodes.push(Node {
                        op: Op::Slice(value_map[param.index()], *start, *end),
                        shape: Shape::Matrix(end - start, cols),
                        dep: step.node(*param).dep,
                        span: node.span,
                    });
                    ValueId((nodes.len() - 1) as u32)
                };
                nodes.push(Node {
                    op: Op::MatVec(matrix, value_map[vector.index()]),
                    shape: Shape::Vector(end - start),
                    dep: node.dep,
                    span: node.span,
                });
                let product = ValueId((nodes.len() - 1) as u32);
                products[merge_idx] = Some(product);
                product
            }
        };
        let Shape::Vector(len) = node.shape else {
            unreachable!("a product is a vector")
        };
        let offset = member_start - start;
        nodes.push(Node {
            op: Op::Slice(product, offset, offset + len),
            ..node.clone()
        });
        value_map.push(ValueId((nodes.len() - 1) as u32));
    }
    step.rebuilt(nodes, &value_map)
}
