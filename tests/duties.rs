//! The housekeeping lease between gateways: of several gateways on one
//! grid exactly one holds it, and when the holder stops renewing, another
//! takes it over once the lease lapses.

mod support;

use cluster::StoreConfig;
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::store_on;
use support::shards::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_holds_the_housekeeping_lease_and_another_takes_over() {
    let grid = TestGrid::start(3, 2).await;
    let gateways: Vec<_> = (0..3)
        .map(|_| store_on(&grid, StoreConfig::default()))
        .collect();
    let names = ["gateway-a", "gateway-b", "gateway-c"];
    let every = Duration::from_secs(1);

    // Everyone announces itself first, then every view agrees.
    for (g, name) in gateways.iter().zip(names) {
        g.hold_duty("test-duty", name, every).await.unwrap();
    }
    let mut holders = Vec::new();
    for (g, name) in gateways.iter().zip(names) {
        if g.hold_duty("test-duty", name, every).await.unwrap() {
            holders.push(name);
        }
    }
    assert_eq!(holders, ["gateway-a"], "exactly one holder");

    // The holder goes away (stops renewing); the others keep renewing
    // and one of them takes over once the lease lapses.
    let taken = wait_for(Duration::from_secs(30), || async {
        let b = gateways[1]
            .hold_duty("test-duty", "gateway-b", every)
            .await
            .unwrap();
        let c = gateways[2]
            .hold_duty("test-duty", "gateway-c", every)
            .await
            .unwrap();
        assert!(!(b && c), "two holders at once");
        b
    })
    .await;
    assert!(taken, "no gateway took over the lapsed lease");

    // A different duty is a different lease.
    assert!(gateways[2]
        .hold_duty("other-duty", "gateway-c", every)
        .await
        .unwrap());
}
