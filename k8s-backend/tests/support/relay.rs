//! The kubelet's side of a port-forward, for fake API servers on real HTTP: the WebSocket
//! upgrade answered with `v4.channel.k8s.io` (the subprotocol kube offers), and the relay of
//! the data channel to a real TCP server (the database the pod would run).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Relay one forwarded connection to `backend`; `open_now` counts relays still open.
pub async fn relay(ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>, backend: SocketAddr, port: u16, open_now: Arc<AtomicUsize>) {
    let (mut sink, mut source) = ws.split();
    let [lo, hi] = port.to_le_bytes();
    // The kubelet's first frame on each channel (data 0, error 1) names the port.
    if sink.send(Message::binary(vec![0, lo, hi])).await.is_err() || sink.send(Message::binary(vec![1, lo, hi])).await.is_err() {
        open_now.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let Ok(tcp) = TcpStream::connect(backend).await else {
        let _ = sink.send(Message::binary([&[1u8][..], b"connection refused"].concat())).await;
        open_now.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if b.first() == Some(&0)
                    && tokio::io::AsyncWriteExt::write_all(&mut wr, &b[1..]).await.is_err() => {
                        break;
                    }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    let from_pod = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0);
                    frame.extend_from_slice(&buf[..n]);
                    if sink.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! { _ = to_pod => {}, _ = from_pod => {} }
    open_now.fetch_sub(1, Ordering::SeqCst);
}

/// Answer a port-forward upgrade (101) and relay it to `backend` once upgraded.
pub fn accept(req: Request<Incoming>, backend: SocketAddr, port: u16, open_now: Arc<AtomicUsize>) -> Response<Full<Bytes>> {
    let key = req.headers().get("sec-websocket-key").cloned().expect("a WebSocket upgrade");
    let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(offered.contains("v4.channel.k8s.io"), "kube offers the channel protocol: {offered}");
    open_now.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => relay(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await, backend, port, open_now).await,
            Err(_) => {
                open_now.fetch_sub(1, Ordering::SeqCst);
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::default())
        .unwrap()
}
