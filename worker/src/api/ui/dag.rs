//! A workflow run's DAG as server-rendered SVG: steps laid out in columns by depth (the
//! longest chain of `depends_on` before them), each a box coloured by its state and
//! linked to its activity, with an arrow per dependency labelled by the files that flow
//! along it (`inputs_from`). Pure: the layout and the drawing take the steps and nothing
//! else, so they are unit-tested without a database.

use super::view::css_token;
use maud::{html, Markup};
use std::collections::HashMap;
use uuid::Uuid;

pub const NODE_W: u32 = 170;
pub const NODE_H: u32 = 50;
const COL_GAP: u32 = 150;
const ROW_GAP: u32 = 26;
const MARGIN: u32 = 16;

/// One step as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    /// The state shown (the activity's when it runs, else the step's).
    pub state: String,
    pub depends_on: Vec<String>,
    /// `(from step, label)`: files taken from an earlier step's output.
    pub inputs: Vec<(String, String)>,
    pub activity: Option<Uuid>,
    /// The output artifact it produced (named on its outgoing arrows that carry files).
    pub artifact: Option<Uuid>,
}

/// Where each step goes: `(column, row)` by index of `steps`.
pub fn layout(steps: &[Step]) -> Vec<(u32, u32)> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut depth: Vec<Option<u32>> = vec![None; steps.len()];
    // Definitions are validated acyclic; the bound keeps a corrupt one from looping.
    fn depth_of(
        i: usize,
        steps: &[Step],
        index: &HashMap<&str, usize>,
        depth: &mut Vec<Option<u32>>,
        guard: usize,
    ) -> u32 {
        if let Some(d) = depth[i] {
            return d;
        }
        if guard > steps.len() {
            return 0;
        }
        let d = steps[i]
            .depends_on
            .iter()
            .filter_map(|dep| index.get(dep.as_str()))
            .map(|&j| depth_of(j, steps, index, depth, guard + 1) + 1)
            .max()
            .unwrap_or(0);
        depth[i] = Some(d);
        d
    }
    let mut rows: HashMap<u32, u32> = HashMap::new();
    (0..steps.len())
        .map(|i| {
            let col = depth_of(i, steps, &index, &mut depth, 0);
            let row = rows.entry(col).or_insert(0);
            let at = (col, *row);
            *row += 1;
            at
        })
        .collect()
}

fn origin(col: u32, row: u32) -> (u32, u32) {
    (
        MARGIN + col * (NODE_W + COL_GAP),
        MARGIN + row * (NODE_H + ROW_GAP),
    )
}

/// One arrow: from the end of `from`'s box to the start of `to`'s, with the files it
/// carries above it and the artifact they come from below.
struct Edge {
    x1: u32,
    y1: u32,
    x2: u32,
    y2: u32,
    label: String,
    artifact: String,
    from: String,
    to: String,
}

/// The SVG of the run's steps.
pub fn svg(steps: &[Step]) -> Markup {
    let at = layout(steps);
    let cols = at.iter().map(|a| a.0 + 1).max().unwrap_or(1);
    let rows = at.iter().map(|a| a.1 + 1).max().unwrap_or(1);
    let width = 2 * MARGIN + cols * NODE_W + (cols - 1) * COL_GAP;
    let height = 2 * MARGIN + rows * NODE_H + (rows - 1) * ROW_GAP;
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        for dep in &s.depends_on {
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            let (fx, fy) = origin(at[j].0, at[j].1);
            let (tx, ty) = origin(at[i].0, at[i].1);
            let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2);
            let (x2, y2) = (tx, ty + NODE_H / 2);
            let files: Vec<&str> = s
                .inputs
                .iter()
                .filter(|(from, _)| from == dep)
                .map(|(_, l)| l.as_str())
                .collect();
            let label = files.join(", ");
            let artifact = match (files.is_empty(), steps[j].artifact) {
                (false, Some(a)) => {
                    let a = a.simple().to_string();
                    format!("artifact …{}", &a[a.len() - 8..])
                }
                _ => String::new(),
            };
            edges.push(Edge {
                x1,
                y1,
                x2,
                y2,
                label,
                artifact,
                from: dep.clone(),
                to: s.id.clone(),
            });
        }
    }
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height)
            aria-label=(format!("Workflow graph: {} steps", steps.len())) {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path.arrowhead d="M 0 0 L 10 5 L 0 10 z" {}
                }
            }
            @for e in &edges {
                @let mid = (e.x1 + e.x2) / 2;
                @let (x1, y1, x2, y2) = (e.x1, e.y1, e.x2, e.y2);
                g.edge data-from=(e.from) data-to=(e.to) {
                    path d=(format!("M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}"))
                        marker-end="url(#arrow)" {}
                    @if !e.label.is_empty() {
                        text.artifact x=(mid) y=((y1 + y2) / 2 - 6) text-anchor="middle" { (e.label) }
                    }
                    @if !e.artifact.is_empty() {
                        text.artifact x=(mid) y=((y1 + y2) / 2 + 14) text-anchor="middle" { (e.artifact) }
                    }
                }
            }
            @for (i, s) in steps.iter().enumerate() {
                @let (x, y) = origin(at[i].0, at[i].1);
                @let node = html! {
                    g class=(format!("node state-{}", css_token(&s.state))) data-step=(s.id) {
                        title { (s.id) ": " (s.state) }
                        rect x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="8" {}
                        text.step-id x=(x + 12) y=(y + 21) { (s.id) }
                        text.step-state x=(x + 12) y=(y + 39) { (s.state) }
                    }
                };
                @if let Some(a) = s.activity {
                    a href=(format!("/ui/activities/{a}")) { (node) }
                } @else {
                    (node)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, deps: &[&str], state: &str) -> Step {
        Step {
            id: id.into(),
            state: state.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            inputs: vec![],
            activity: None,
            artifact: None,
        }
    }

    #[test]
    fn a_diamond_lays_out_in_three_columns() {
        let steps = vec![
            step("a", &[], "succeeded"),
            step("b", &["a"], "running"),
            step("c", &["a"], "pending"),
            step("d", &["b", "c"], "pending"),
        ];
        assert_eq!(layout(&steps), vec![(0, 0), (1, 0), (1, 1), (2, 0)]);
    }

    #[test]
    fn depth_is_the_longest_chain_even_when_listed_out_of_order() {
        let steps = vec![
            step("last", &["mid", "first"], "pending"),
            step("mid", &["first"], "pending"),
            step("first", &[], "pending"),
        ];
        assert_eq!(layout(&steps), vec![(2, 0), (1, 0), (0, 0)]);
    }

    #[test]
    fn svg_has_a_box_per_step_an_edge_per_dependency_and_artifact_labels() {
        let mut steps = vec![
            step("build", &[], "succeeded"),
            step("test", &["build"], "running"),
        ];
        steps[1].inputs = vec![("build".into(), "/out → /in".into())];
        steps[0].artifact = Some(Uuid::from_u128(0xabcdef12));
        steps[1].activity = Some(Uuid::nil());
        let s = svg(&steps).into_string();
        assert_eq!(s.matches("<rect").count(), 2, "{s}");
        assert_eq!(s.matches("class=\"edge\"").count(), 1, "{s}");
        assert!(
            s.contains("node state-succeeded") && s.contains("node state-running"),
            "{s}"
        );
        assert!(
            s.contains(">/out → /in<") && s.contains(">artifact …abcdef12<"),
            "{s}"
        );
        assert!(
            s.contains(&format!("href=\"/ui/activities/{}\"", Uuid::nil())),
            "{s}"
        );
        // Two columns: 16 + 170 + 150 + 170 + 16.
        assert!(s.contains("viewBox=\"0 0 522 82\""), "{s}");
    }

    #[test]
    fn step_names_are_escaped() {
        let s = svg(&[step("<script>", &[], "x\"y")]).into_string();
        assert!(!s.contains("<script>"), "{s}");
    }
}
