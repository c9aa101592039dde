//! HTTP probes ignore proxy environment variables. A binary of its own, because it sets
//! process-wide environment variables.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use herdsman_probe::{HttpProber, Outcome};
use support::TestServer;

#[tokio::test]
async fn proxy_environment_variables_are_ignored() {
    let server = TestServer::start().await;
    let proxy = TestServer::start().await;
    let proxy_url = format!("http://{}", proxy.addr);
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(var, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let r = HttpProber::new()
        .check(&server.url("/ok"), None, Duration::from_secs(1))
        .await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 0);
    assert_eq!(server.hits("/ok"), 1);
}
