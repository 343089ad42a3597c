use dep2p_core::node::NodeConfig;
use dep2p_core::testing::World;
use std::time::Duration;

#[test]
fn smoke() {
    let mut world = World::new(1);
    let a = world.add_node(NodeConfig::default());
    let b = world.add_node(NodeConfig::default());
    world.connect(a, b);
    let ok = world.run_until(Duration::from_secs(5), |w| w.is_connected(a, b) && w.is_connected(b, a));
    world.run_for(Duration::from_secs(1));
    for e in world.events(a) { println!("A {e:?}"); }
    for e in world.events(b) { println!("B {e:?}"); }
    assert!(ok);
}
