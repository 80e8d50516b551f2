//! The tool calls in flight to one server, each answered exactly once: with the server's
//! answer, or, when the server goes away first, with [`McpError::Gone`] and the reason. A
//! caller waits on a channel of its own rather than on a future in the server actor's
//! context, so a server actor that stops answers every call it holds, whatever the order in
//! which its futures would have been polled.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::{McpError, McpToolResult};

/// What a call is answered with.
pub(super) type Answer = Result<McpToolResult, McpError>;

/// The calls in flight to one server.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    next: u64,
    calls: HashMap<u64, oneshot::Sender<Answer>>,
}

impl InFlight {
    /// Notes a call to `server`: its number, and the answer to wait for. A call dropped
    /// unanswered (its actor panicked) is answered `Gone` too.
    pub(super) fn open(
        &mut self,
        server: &str,
    ) -> (u64, impl Future<Output = Answer> + Send + 'static) {
        let id = self.next;
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.calls.insert(id, tx);
        let server = server.to_owned();
        let answer = async move {
            rx.await.unwrap_or_else(|_| {
                Err(McpError::Gone {
                    server,
                    reason: "its actor ended".to_owned(),
                })
            })
        };
        (id, answer)
    }

    /// Answers call `id`, unless it was answered already.
    pub(super) fn answer(&mut self, id: u64, answer: Answer) {
        if let Some(tx) = self.calls.remove(&id) {
            // The caller may have given up waiting.
            let _ = tx.send(answer);
        }
    }

    /// Answers every call still in flight: `server` went away, for `reason`.
    pub(super) fn fail_all(&mut self, server: &str, reason: &str) {
        for (_, tx) in self.calls.drain() {
            let _ = tx.send(Err(McpError::Gone {
                server: server.to_owned(),
                reason: reason.to_owned(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(text: &str) -> McpToolResult {
        McpToolResult {
            server: "s".into(),
            tool: "t".into(),
            content: vec![text.into()],
            structured: None,
            is_error: false,
        }
    }

    #[tokio::test]
    async fn each_call_gets_its_own_answer_once() {
        let mut calls = InFlight::default();
        let (a, first) = calls.open("s");
        let (b, second) = calls.open("s");
        assert_ne!(a, b);
        calls.answer(b, Ok(result("b")));
        calls.answer(a, Ok(result("a")));
        calls.answer(a, Ok(result("again")));
        assert!(calls.calls.is_empty());
        assert_eq!(first.await, Ok(result("a")));
        assert_eq!(second.await, Ok(result("b")));
    }

    #[tokio::test]
    async fn a_server_that_goes_away_fails_every_call_with_the_reason() {
        let mut calls = InFlight::default();
        let (a, first) = calls.open("s");
        let (_, second) = calls.open("s");
        calls.fail_all("s", "it exited");
        assert!(calls.calls.is_empty());
        calls.answer(a, Ok(result("late")));
        for answer in [first.await, second.await] {
            assert_eq!(
                answer.unwrap_err().to_string(),
                "MCP server `s` went away during the call: it exited"
            );
        }
        // Dropped unanswered.
        let (_, third) = calls.open("s");
        drop(calls);
        assert!(matches!(third.await, Err(McpError::Gone { .. })));
    }
}
