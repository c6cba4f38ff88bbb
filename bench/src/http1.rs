//! One load-generator client's HTTP/1.1 connection, driven by the client's own task.
//!
//! A pooled client (reqwest) parses the URL of every request, looks the connection up in a
//! shared pool and hands the request to the connection's task through a channel: measured
//! under 4 KiB puts at 256 clients, that was most of the load generator's user time, on the
//! cores the cell under test shares with it. Here each client owns one keep-alive
//! connection and polls it in the same task as its requests, so a request costs the
//! connection's own work and its socket calls.

use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest one request may take, from connecting to its body's last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

type Link<B> = (SendRequest<B>, Pin<Box<Connection<TokioIo<TcpStream>, B>>>);

/// A client's connection to `authority` (`host:port`), opened on first use and again
/// after the server closes it.
pub struct Client<B: hyper::body::Body + 'static> {
    authority: String,
    host: HeaderValue,
    link: Option<Link<B>>,
}

impl<B> Client<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client for `endpoint` (`http://host:port`, any path ignored).
    pub fn new(endpoint: &str) -> Result<Client<B>> {
        let uri: http::Uri = endpoint.parse().with_context(|| format!("endpoint {endpoint:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("endpoint {endpoint:?}: only http:// is supported");
        }
        let authority =
            uri.authority().ok_or_else(|| anyhow!("endpoint {endpoint:?} has no host"))?.to_string();
        let host = HeaderValue::from_str(&authority)?;
        Ok(Client { authority, host, link: None })
    }

    /// Sends `method path` with `body`, hands every chunk of the answer's body to `chunk`
    /// (with its offset) as it arrives; returns the status and the body's length.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: B,
        chunk: impl FnMut(usize, &[u8]),
    ) -> Result<(StatusCode, usize)> {
        let exchange = self.exchange(method, path, body, chunk);
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// Opens the connection now if it is not open (so that a measurement does not time it).
    pub async fn connect(&mut self) -> Result<()> {
        if self.link.is_none() {
            let connecting = async {
                let stream = TcpStream::connect(&self.authority)
                    .await
                    .with_context(|| format!("connect to {}", self.authority))?;
                stream.set_nodelay(true)?;
                Ok::<_, anyhow::Error>(http1::handshake(TokioIo::new(stream)).await?)
            };
            let (sender, conn) = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
                .await
                .map_err(|_| anyhow!("no connection to {} within {REQUEST_TIMEOUT:?}", self.authority))??;
            self.link = Some((sender, Box::pin(conn)));
        }
        Ok(())
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: B,
        mut chunk: impl FnMut(usize, &[u8]),
    ) -> Result<(StatusCode, usize)> {
        self.connect().await?;
        let Some((sender, conn)) = self.link.as_mut() else { bail!("no connection") };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.host.clone())
            .body(body)?;
        let (out, ended) = {
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let mut body = response.into_body();
                let mut at = 0usize;
                while let Some(frame) = body.frame().await {
                    if let Some(data) = frame?.data_ref() {
                        chunk(at, data);
                        at += data.len();
                    }
                }
                Ok::<_, hyper::Error>((status, at))
            };
            let mut exchange = std::pin::pin!(exchange);
            // The connection makes progress only while polled: poll it beside the exchange. If
            // it ends first (the server closed it), what it already read still completes the
            // exchange, and the next request opens a new connection.
            let (out, ended) = tokio::select! {
                biased;
                out = &mut exchange => (out, false),
                ended = conn.as_mut() => match ended {
                    Ok(()) => (exchange.await, true),
                    Err(e) => (Err(e), true),
                },
            };
            (out, ended)
        };
        if ended || out.is_err() {
            self.link = None;
        }
        Ok(out?)
    }
}

#[cfg(test)]
mod tests {
    use super::Client;
    use crate::blocks::Frames;
    use http::Method;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each connection's first request with `answer`, then closes it;
    /// returns its address and a count of the connections it accepted.
    async fn one_answer_per_connection(answer: &'static str) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok(Ok((mut socket, _))) =
                tokio::time::timeout(std::time::Duration::from_secs(2), listener.accept()).await
            {
                accepted += 1;
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.expect("read");
                    assert!(n > 0, "request cut short");
                    head.extend_from_slice(&buf[..n]);
                }
                socket.write_all(answer.as_bytes()).await.expect("write");
                socket.shutdown().await.expect("shutdown");
            }
            accepted
        });
        (addr, server)
    }

    #[tokio::test]
    async fn a_closed_connection_is_opened_again_and_every_body_arrives_whole() {
        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let (addr, server) = one_answer_per_connection(answer).await;
        let mut client = Client::<Frames>::new(&format!("http://{addr}")).expect("client");
        for _ in 0..3 {
            let mut got = Vec::new();
            let (status, len) = client
                .request(Method::GET, "/x", Frames::empty(), |at, b| {
                    assert_eq!(at, got.len());
                    got.extend_from_slice(b)
                })
                .await
                .expect("request");
            assert_eq!((status.as_u16(), len, got.as_slice()), (200, 5, b"hello".as_slice()));
        }
        assert_eq!(server.await.expect("server"), 3, "one connection per request");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello";
        let (addr, _server) = one_answer_per_connection(answer).await;
        let mut client = Client::<Frames>::new(&format!("http://{addr}")).expect("client");
        assert!(client.request(Method::GET, "/x", Frames::empty(), |_, _| {}).await.is_err());
    }

    #[test]
    fn only_plain_http_endpoints_are_taken() {
        assert!(Client::<Frames>::new("https://127.0.0.1:1").is_err());
        assert!(Client::<Frames>::new("127.0.0.1:1").is_err());
        assert!(Client::<Frames>::new("http://127.0.0.1:1").is_ok());
    }
}
