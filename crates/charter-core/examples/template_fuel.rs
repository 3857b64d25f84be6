//! How long the costliest template a payload can drive runs before its fuel (50,000
//! instructions) stops it: the bound that keeps template rendering from stalling the node.
//!
//! `cargo run --release -p charter-core --example template_fuel`

use std::time::Instant;

use charter_core::template::Template;

fn main() {
    // A payload with two 8,000-item lists, looped over one inside the other.
    let items: Vec<serde_json::Value> = (0..8_000)
        .map(|i| serde_json::json!(format!("item-{i}")))
        .collect();
    let ctx = serde_json::json!({ "payload": { "a": items, "b": items } });
    let t = Template::parse(
        "{% for x in payload.a %}{% for y in payload.b %}{% if x == y %}{{ x }}{% endif %}{% endfor %}{% endfor %}",
    )
    .expect("the template parses");
    let mut worst = std::time::Duration::ZERO;
    let mut message = String::new();
    for _ in 0..20 {
        let started = Instant::now();
        let result = t.render(&ctx);
        worst = worst.max(started.elapsed());
        if let Err(e) = result {
            message = e.to_string();
        }
    }
    println!("worst of 20 renders: {worst:?}; error: {message}");
}
