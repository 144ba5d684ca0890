//! Streaming results: `SUBSCRIBE` and `COPY (SUBSCRIBE ...) TO STDOUT`.
//!
//! pgwire buffers a response until it is complete, which a subscription never is, so
//! eddy writes these responses itself: each epoch's rows are written and flushed at once.
//! The stream ends when the client cancels (psql's Ctrl-C sends a cancel request), when
//! the client goes away (noticed at the next write; an idle stream writes a
//! `ParameterStatus` heartbeat every second for that reason), or on an error such as a
//! buffer overflow — always with a normal Postgres error, so the connection stays usable.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::RecordBatch;
use futures::{Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::api::{ClientInfo, ConnectionHandle};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::{FieldDescription, RowDescription};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;

use super::encode::{value_at, PgValue};
use super::error::error_info;
use crate::engine::subscribe::Subscription;
use crate::error::Error;
use crate::sql::CopyFormat;

/// How a stream is framed on the wire.
#[derive(Clone, Copy, Debug)]
pub enum StreamMode {
    /// RowDescription once, then DataRows (a plain `SUBSCRIBE`). `describe`: send the
    /// RowDescription (simple protocol; the extended protocol sent it at Describe).
    Rows { describe: bool },
    /// CopyOutResponse, then CopyData lines, as `COPY ... TO STDOUT` does.
    Copy(CopyFormat),
}

/// Write a subscription to the client until it ends. Returns the error to report (the
/// stream itself was properly terminated for the protocol).
pub async fn stream_subscription<C>(
    client: &mut C,
    mut sub: Subscription,
    mode: StreamMode,
    format: &Format,
) -> PgWireResult<Error>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let schema = sub.schema().clone();
    let fields: Arc<Vec<FieldInfo>> = Arc::new(super::fields(&schema, format));
    match mode {
        StreamMode::Rows { describe: true } => {
            let desc = RowDescription::new(fields.iter().map(FieldDescription::from).collect());
            client
                .send(PgWireBackendMessage::RowDescription(desc))
                .await?;
        }
        StreamMode::Rows { describe: false } => {}
        StreamMode::Copy(_) => {
            let n = fields.len();
            let resp = CopyOutResponse::new(0, n as i16, vec![0; n]);
            client
                .send(PgWireBackendMessage::CopyOutResponse(resp))
                .await?;
        }
    }
    // Cancel requests for this connection now end this stream.
    let mut cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
        Some(h) => Some(h.start_query().await),
        None => None,
    };
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut last_write = Instant::now();
    let ended: Error = loop {
        let next = async {
            match cancel.as_mut() {
                Some(c) => tokio::select! {
                    r = sub.next_event() => Some(r),
                    _ = c => None,
                },
                None => Some(sub.next_event().await),
            }
        };
        match next.await {
            None => break Error::Cancelled,
            Some(Err(e)) => break e,
            Some(Ok(Some(batch))) => {
                match mode {
                    StreamMode::Rows { .. } => {
                        send_rows(client, &mut encoder, &fields, &batch).await?
                    }
                    StreamMode::Copy(f) => send_copy(client, &batch, f).await?,
                }
                client.flush().await?;
                last_write = Instant::now();
            }
            Some(Ok(None)) => {
                // Progress without output: every second, a heartbeat the client ignores,
                // so a client that went away is noticed (the write fails).
                if last_write.elapsed() >= Duration::from_secs(1) {
                    let status = ParameterStatus::new(
                        "eddy_subscription_epoch".into(),
                        sub.last_complete_epoch.to_string(),
                    );
                    client
                        .send(PgWireBackendMessage::ParameterStatus(status))
                        .await?;
                    last_write = Instant::now();
                }
            }
        }
    };
    // End the stream cleanly for the protocol, then report why it ended.
    if let StreamMode::Copy(_) = mode {
        client
            .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
    }
    Ok(ended)
}

async fn send_rows<C>(
    client: &mut C,
    encoder: &mut DataRowEncoder,
    fields: &Arc<Vec<FieldInfo>>,
    batch: &RecordBatch,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for row in 0..batch.num_rows() {
        for (c, col) in batch.columns().iter().enumerate() {
            let f = &fields[c];
            encoder.encode_field_with_type_and_format(
                &value_at(col, row),
                f.datatype(),
                f.format(),
                f.format_options(),
            )?;
        }
        client
            .feed(PgWireBackendMessage::DataRow(encoder.take_row()))
            .await?;
    }
    Ok(())
}

/// Rows in COPY text format (tab-separated, `\N` for NULL, backslash escapes) or CSV.
pub fn copy_lines(batch: &RecordBatch, format: CopyFormat) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut line = BytesMut::new();
        for (c, col) in batch.columns().iter().enumerate() {
            if c > 0 {
                line.put_u8(if format == CopyFormat::Csv {
                    b','
                } else {
                    b'\t'
                });
            }
            match value_at(col, row) {
                PgValue::Null => {
                    if format == CopyFormat::Text {
                        line.put_slice(b"\\N");
                    }
                }
                v => {
                    let s = v.to_text().unwrap_or_default();
                    match format {
                        CopyFormat::Text => {
                            for b in s.bytes() {
                                match b {
                                    b'\\' => line.put_slice(b"\\\\"),
                                    b'\t' => line.put_slice(b"\\t"),
                                    b'\n' => line.put_slice(b"\\n"),
                                    b'\r' => line.put_slice(b"\\r"),
                                    other => line.put_u8(other),
                                }
                            }
                        }
                        CopyFormat::Csv => {
                            let quote = s.is_empty() || s.contains([',', '"', '\n', '\r']);
                            if quote {
                                line.put_u8(b'"');
                                line.put_slice(s.replace('"', "\"\"").as_bytes());
                                line.put_u8(b'"');
                            } else {
                                line.put_slice(s.as_bytes());
                            }
                        }
                    }
                }
            }
        }
        line.put_u8(b'\n');
        out.push(line.to_vec());
    }
    out
}

async fn send_copy<C>(client: &mut C, batch: &RecordBatch, format: CopyFormat) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for line in copy_lines(batch, format) {
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(line.into())))
            .await?;
    }
    Ok(())
}

/// The error response for how a stream ended.
pub fn end_error(e: &Error) -> PgWireBackendMessage {
    PgWireBackendMessage::ErrorResponse(error_info(e).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn copy_text_escapes_and_marks_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("x\ty\\z"), Some("a,\"b\"")])),
            ],
        )
        .unwrap();
        let text = copy_lines(&batch, CopyFormat::Text);
        assert_eq!(text[0], b"1\tx\\ty\\\\z\n".to_vec());
        assert_eq!(text[1], b"\\N\ta,\"b\"\n".to_vec());
        let csv = copy_lines(&batch, CopyFormat::Csv);
        assert_eq!(csv[1], b",\"a,\"\"b\"\"\"\n".to_vec());
    }
}
