//! `--suite mcp`: `CallMcpTool` of the example MCP server's `echo` tool next to `Ping`.

use std::time::{Duration, Instant};

use astrid_protocol::client::Client;
use astrid_protocol::layout::SessionFiles;
use astrid_protocol::{McpServerInfo, McpServerState, Request};

use crate::bench::run_astrid;
use crate::kind::Kind;

pub(crate) fn mcp_suite(rt: &tokio::runtime::Runtime, files: &SessionFiles, requests: usize) {
    let echo = Kind::Mcp {
        server: "test".into(),
        tool: "echo".into(),
    };
    wait_mcp_running(rt, files);
    rt.block_on(run_astrid(files, &echo, 1, 2_000, 1));
    let mut rows = Vec::new();
    for clients in [1, 50] {
        let ping = rt.block_on(run_astrid(files, &Kind::Ping, clients, requests, 1));
        let call = rt.block_on(run_astrid(files, &echo, clients, requests, 1));
        ping.print();
        call.print();
        rows.push((clients, ping, call));
    }
    println!(
        "\n| clients | `Ping` req/s (p50 / p99 us) | `CallMcpTool` test/echo calls/s (p50 / p99 us) |"
    );
    println!("|---|---|---|");
    for (clients, ping, call) in rows {
        println!(
            "| {clients} | {:.0} ({:.0} / {:.0}) | {:.0} ({:.0} / {:.0}) |",
            ping.rate(),
            ping.p50_us,
            ping.p99_us,
            call.rate(),
            call.p50_us,
            call.p99_us,
        );
    }
}

/// Waits until the MCP server `test` has finished its handshake.
fn wait_mcp_running(rt: &tokio::runtime::Runtime, files: &SessionFiles) {
    rt.block_on(async {
        let client = Client::connect(files, "loadgen").await.unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let servers: Vec<McpServerInfo> = client.call(Request::ListMcpServers).await.unwrap();
            if servers
                .iter()
                .any(|s| s.name == "test" && s.state == McpServerState::Running)
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "the MCP server did not start: {servers:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
