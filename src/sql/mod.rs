//! SQL text → eddy statements.
//!
//! eddy speaks PostgreSQL's dialect (via sqlparser) plus its own streaming DDL:
//! `CREATE STREAM`, `SHOW STREAMS | TABLES | MATERIALIZED VIEWS | SINKS`,
//! `DESCRIBE x`, `EXPLAIN CREATE MATERIALIZED VIEW ...`, `EXPLAIN x` and `FLUSH`.
//! This module drives sqlparser's parser statement by statement: statements it knows
//! are delegated to it, eddy's own are parsed here with its building blocks. Each
//! statement keeps its text and its offset in the query string, so later errors can
//! point at the right place.

pub mod naming;
mod statement;

pub use statement::*;

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token};

use crate::catalog::ObjectKind;
use crate::error::{Error, Result};

/// Maximum nesting depth of expressions and subqueries.
const RECURSION_LIMIT: usize = 200;

/// One statement of a query string.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: Statement,
    /// The statement's own text.
    pub text: String,
    /// Character offset of the statement in the whole query string (0-based).
    pub offset: usize,
}

/// The prefix that marks a relation read by a lookup join (see [`rewrite_lookup_joins`]).
pub const LOOKUP_PREFIX: &str = "__lookup__";

/// `t FOR SYSTEM_TIME AS OF PROCTIME()` (Flink's and RisingWave's spelling of a lookup
/// join: each row of the other side is joined with `t` as it is when the row arrives, and
/// never revised) becomes `"__lookup__t" AS t`: the planner resolves the marked name to
/// `t` flagged for lookup. sqlparser's Postgres dialect does not parse the clause itself.
fn rewrite_lookup_joins(tokens: &mut Vec<datafusion::sql::sqlparser::tokenizer::TokenWithSpan>) {
    use datafusion::sql::sqlparser::tokenizer::{TokenWithSpan, Whitespace, Word};
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let significant = |tokens: &[TokenWithSpan], from: usize, n: usize| -> Option<Vec<usize>> {
        let mut out = vec![];
        let mut i = from;
        while out.len() < n {
            let t = tokens.get(i)?;
            if !matches!(t.token, Token::Whitespace(_)) {
                out.push(i);
            }
            i += 1;
        }
        Some(out)
    };
    let mut i = 0;
    while i < tokens.len() {
        if !is_word(&tokens[i].token, "FOR") {
            i += 1;
            continue;
        }
        let Some(at) = significant(tokens, i, 7) else {
            break;
        };
        let pattern = ["FOR", "SYSTEM_TIME", "AS", "OF", "PROCTIME"];
        let matches = pattern
            .iter()
            .zip(&at)
            .all(|(w, j)| is_word(&tokens[*j].token, w))
            && tokens[at[5]].token == Token::LParen
            && tokens[at[6]].token == Token::RParen;
        // The relation name right before it.
        let name_at = (0..i)
            .rev()
            .find(|j| !matches!(tokens[*j].token, Token::Whitespace(_)));
        let name = name_at.and_then(|j| match &tokens[j].token {
            Token::Word(w) => Some((j, w.clone())),
            _ => None,
        });
        let (true, Some((name_at, word))) = (matches, name) else {
            i += 1;
            continue;
        };
        let table = if word.quote_style.is_some() {
            word.value.clone()
        } else {
            word.value.to_lowercase()
        };
        let span = tokens[i].span;
        tokens[name_at].token = Token::Word(Word {
            value: format!("{LOOKUP_PREFIX}{table}"),
            quote_style: Some('"'),
            keyword: Keyword::NoKeyword,
        });
        let end = at[6] + 1;
        // Keep the name usable as a qualifier: alias it unless an alias follows.
        let next = tokens[end..]
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| t.token.clone());
        let has_alias = matches!(&next, Some(Token::Word(w)) if w.keyword == Keyword::AS || w.keyword == Keyword::NoKeyword || w.quote_style.is_some());
        let mut replacement = vec![TokenWithSpan::new(
            Token::Whitespace(Whitespace::Space),
            span,
        )];
        if !has_alias {
            replacement.push(TokenWithSpan::new(Token::make_keyword("AS"), span));
            replacement.push(TokenWithSpan::new(
                Token::Whitespace(Whitespace::Space),
                span,
            ));
            replacement.push(TokenWithSpan::new(Token::Word(word), span));
            replacement.push(TokenWithSpan::new(
                Token::Whitespace(Whitespace::Space),
                span,
            ));
        }
        let n = replacement.len();
        tokens.splice(i..end, replacement);
        i += n;
    }
}

/// Parse every statement of `sql`.
pub fn parse(sql: &str) -> Result<Vec<ParsedStatement>> {
    let lines = LineIndex::new(sql);
    let dialect = PostgreSqlDialect {};
    // Tokenize into a buffer sized for the text up front: a large INSERT has hundreds of
    // thousands of tokens, and growing the vector copies them over and over.
    let mut tokens = Vec::with_capacity(sql.len() / 3 + 16);
    datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location_into_buf(&mut tokens)
        .map_err(|e| parse_error_in(ParserError::TokenizerError(e.to_string()), &lines))?;
    rewrite_lookup_joins(&mut tokens);
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens);
    let mut out = vec![];
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let first = parser.peek_token();
        if first.token == Token::EOF {
            break;
        }
        let start = lines.byte_offset(first.span.start);
        let statement = parse_statement(&mut parser).map_err(|e| e.with_position_from(&lines))?;
        let last_end = parser.get_current_token().span.end;
        let end = lines.byte_offset(last_end).max(start);
        let next = parser.peek_token();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            let at = lines.char_offset(next.span.start);
            return Err(Error::Parse {
                message: format!("syntax error at or near \"{}\"", next.token),
                position: Some(at + 1),
            });
        }
        let text = sql.get(start..end).unwrap_or(sql).trim().to_string();
        let offset = sql[..start.min(sql.len())].chars().count();
        out.push(ParsedStatement {
            statement,
            text,
            offset,
        });
    }
    Ok(out)
}

/// Parse exactly one statement (e.g. a stored view definition).
pub fn parse_one(sql: &str) -> Result<Statement> {
    let mut v = parse(sql)?;
    match v.len() {
        1 => Ok(v.remove(0).statement),
        n => Err(Error::parse(format!("expected one statement, found {n}"))),
    }
}

/// An error from the parser, before it is placed in the query text.
enum StmtError {
    Parser(ParserError),
    Eddy(Error),
}

impl From<ParserError> for StmtError {
    fn from(e: ParserError) -> Self {
        StmtError::Parser(e)
    }
}

impl From<Error> for StmtError {
    fn from(e: Error) -> Self {
        StmtError::Eddy(e)
    }
}

impl StmtError {
    fn with_position_from(self, lines: &LineIndex) -> Error {
        match self {
            StmtError::Parser(e) => parse_error_in(e, lines),
            StmtError::Eddy(e) => e,
        }
    }
}

fn word_is(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case(word) && w.quote_style.is_none())
}

fn peek_is(p: &Parser, n: usize, word: &str) -> bool {
    word_is(&p.peek_nth_token(n).token, word)
}

fn parse_statement(p: &mut Parser) -> std::result::Result<Statement, StmtError> {
    if peek_is(p, 0, "CREATE") && peek_is(p, 1, "STREAM") {
        p.next_token();
        p.next_token();
        return Ok(Statement::CreateStream(parse_create_relation_rest(
            p,
            ObjectKind::Stream,
        )?));
    }
    if peek_is(p, 0, "CREATE") && peek_is(p, 1, "SINK") {
        p.next_token();
        p.next_token();
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = object_name(&p.parse_object_name(false)?)?;
        p.expect_keyword(Keyword::FROM)?;
        let from = object_name(&p.parse_object_name(false)?)?;
        let options = if p.parse_keyword(Keyword::WITH) {
            p.prev_token();
            options_map(&p.parse_options(Keyword::WITH)?)?
        } else {
            Default::default()
        };
        return Ok(Statement::CreateSink(crate::sql::statement::CreateSink {
            name,
            if_not_exists,
            from,
            options,
        }));
    }
    if peek_is(p, 0, "CREATE") && peek_is(p, 1, "TABLE") && create_table_has_watermark(p) {
        p.next_token();
        p.next_token();
        return Ok(Statement::CreateTable(parse_create_relation_rest(
            p,
            ObjectKind::Table,
        )?));
    }
    if peek_is(p, 0, "SHOW") {
        if let Some(s) = parse_show(p)? {
            return Ok(s);
        }
    }
    if peek_is(p, 0, "DESCRIBE") || peek_is(p, 0, "DESC") {
        p.next_token();
        let _ = p.parse_keyword(Keyword::TABLE);
        let name = object_name(&p.parse_object_name(false)?)?;
        return Ok(Statement::Describe { name });
    }
    if peek_is(p, 0, "EXPLAIN") {
        if peek_is(p, 1, "CREATE") {
            p.next_token();
            let inner = parse_statement(p)?;
            return match inner {
                Statement::CreateView(v) => Ok(Statement::ExplainCreateView(v)),
                _ => Err(Error::not_supported(
                    "EXPLAIN of this statement; EXPLAIN CREATE MATERIALIZED VIEW is supported",
                )
                .into()),
            };
        }
        // EXPLAIN [ANALYZE] <view name> (a bare name, not a query).
        let analyze = peek_is(p, 1, "ANALYZE");
        let at = if analyze { 2 } else { 1 };
        if let Token::Word(w) = &p.peek_nth_token(at).token {
            let next = p.peek_nth_token(at + 1).token;
            if w.keyword == Keyword::NoKeyword
                && matches!(next, Token::SemiColon | Token::EOF | Token::Period)
            {
                for _ in 0..at {
                    p.next_token();
                }
                let name = object_name(&p.parse_object_name(false)?)?;
                return Ok(Statement::ExplainObject { name, analyze });
            }
        }
    }
    if peek_is(p, 0, "FLUSH") {
        p.next_token();
        return Ok(Statement::Flush);
    }
    if peek_is(p, 0, "CHECKPOINT") {
        p.next_token();
        return Ok(Statement::Checkpoint);
    }
    if peek_is(p, 0, "SUBSCRIBE") {
        p.next_token();
        return Ok(Statement::Subscribe(parse_subscribe_rest(p)?));
    }
    if peek_is(p, 0, "COPY")
        && p.peek_nth_token(1).token == Token::LParen
        && peek_is(p, 2, "SUBSCRIBE")
    {
        p.next_token();
        p.next_token();
        p.next_token();
        let subscribe = parse_subscribe_rest(p)?;
        p.expect_token(&Token::RParen)?;
        let format = parse_copy_to_stdout(p)?;
        return Ok(Statement::CopySubscribe { subscribe, format });
    }
    if peek_is(p, 0, "DECLARE") {
        return parse_declare(p);
    }
    if peek_is(p, 0, "FETCH") {
        return parse_fetch(p);
    }
    if peek_is(p, 0, "CLOSE") {
        p.next_token();
        if p.parse_keyword(Keyword::ALL) {
            return Ok(Statement::Close { name: None });
        }
        return Ok(Statement::Close {
            name: Some(normalize_ident(&p.parse_identifier()?)),
        });
    }
    if peek_is(p, 0, "DROP") {
        return parse_drop(p);
    }
    if peek_is(p, 0, "SET") {
        return parse_set(p);
    }
    if peek_is(p, 0, "RESET") {
        p.next_token();
        let name = if p.parse_keyword(Keyword::ALL) {
            "all".to_string()
        } else {
            dotted_name(p)?
        };
        return Ok(Statement::Reset { name });
    }
    if peek_is(p, 0, "DISCARD")
        || peek_is(p, 0, "DEALLOCATE")
        || peek_is(p, 0, "LISTEN")
        || peek_is(p, 0, "UNLISTEN")
    {
        let tok = p.next_token().token.to_string().to_uppercase();
        // Consume the rest of the statement: these are accepted as no-ops.
        while !matches!(p.peek_token().token, Token::SemiColon | Token::EOF) {
            p.next_token();
        }
        return Ok(Statement::NoOp { tag: tok });
    }

    let stmt = p.parse_statement()?;
    if let ast::Statement::CreateView(v) = stmt {
        let mut view = create_view(v)?;
        if peek_is(p, 0, "EMIT") {
            p.next_token();
            view.emit = if p.parse_keywords(&[Keyword::ON, Keyword::WINDOW, Keyword::CLOSE]) {
                EmitMode::OnWindowClose
            } else if peek_is(p, 0, "FINAL") {
                p.next_token();
                EmitMode::OnWindowClose
            } else if peek_is(p, 0, "CHANGES") {
                p.next_token();
                EmitMode::Changes
            } else {
                return Err(p
                    .expected::<()>(
                        "ON WINDOW CLOSE, FINAL or CHANGES after EMIT",
                        p.peek_token(),
                    )
                    .unwrap_err()
                    .into());
            };
        }
        return Ok(Statement::CreateView(view));
    }
    // ksqlDB's push query: `SELECT ... EMIT CHANGES` is a subscription to the query.
    if let ast::Statement::Query(q) = &stmt {
        if peek_is(p, 0, "EMIT") && peek_is(p, 1, "CHANGES") {
            p.next_token();
            p.next_token();
            return Ok(Statement::Subscribe(SubscribeStatement {
                target: SubscribeTarget::Query(q.clone()),
                snapshot: None,
                progress: false,
                as_of: None,
                upsert_key: None,
            }));
        }
    }
    if let ast::Statement::Copy { .. } = &stmt {
        return copy_statement(stmt).map_err(StmtError::from);
    }
    Ok(match stmt {
        ast::Statement::CreateTable(ct) => Statement::CreateTable(create_table(ct)?),
        ast::Statement::CreateView(v) => Statement::CreateView(create_view(v)?),
        ast::Statement::Query(_) => Statement::Query(Box::new(stmt)),
        ast::Statement::Insert(_) => Statement::Insert(Box::new(stmt)),
        ast::Statement::Update(_) => Statement::Update(Box::new(stmt)),
        ast::Statement::Delete(_) => Statement::Delete(Box::new(stmt)),
        ast::Statement::Explain { .. } => Statement::ExplainQuery(Box::new(stmt)),
        ast::Statement::StartTransaction { .. } => Statement::Begin,
        ast::Statement::Commit { .. } => Statement::Commit,
        ast::Statement::Rollback { .. } => Statement::Rollback,
        ast::Statement::ExplainTable { table_name, .. } => Statement::Describe {
            name: object_name(&table_name)?,
        },
        other => {
            return Err(Error::not_supported(format!(
                "statement {}",
                first_words(&other.to_string())
            ))
            .into())
        }
    })
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// After `SUBSCRIBE`: `[TO] name | (query)` then, in any order, `ENVELOPE UPSERT (KEY
/// (cols))`, `WITH (SNAPSHOT = b, PROGRESS = b)`, `AS OF n`.
fn parse_subscribe_rest(p: &mut Parser) -> std::result::Result<SubscribeStatement, StmtError> {
    let _ = p.parse_keyword(Keyword::TO);
    let target = if p.consume_token(&Token::LParen) {
        let q = p.parse_query()?;
        p.expect_token(&Token::RParen)?;
        SubscribeTarget::Query(q)
    } else {
        SubscribeTarget::Relation(object_name(&p.parse_object_name(false)?)?)
    };
    let mut s = SubscribeStatement {
        target,
        snapshot: None,
        progress: false,
        as_of: None,
        upsert_key: None,
    };
    loop {
        if peek_is(p, 0, "ENVELOPE") {
            p.next_token();
            if !peek_is(p, 0, "UPSERT") {
                return Err(Error::not_supported("ENVELOPE other than UPSERT").into());
            }
            p.next_token();
            p.expect_token(&Token::LParen)?;
            if !p.parse_keyword(Keyword::KEY) {
                return Err(Error::parse("expected KEY (columns) after ENVELOPE UPSERT (").into());
            }
            p.expect_token(&Token::LParen)?;
            let cols = p.parse_comma_separated(|p| p.parse_identifier())?;
            p.expect_token(&Token::RParen)?;
            p.expect_token(&Token::RParen)?;
            s.upsert_key = Some(cols.iter().map(normalize_ident).collect());
        } else if p.parse_keyword(Keyword::WITH) {
            p.prev_token();
            for (k, v) in options_map(&p.parse_options(Keyword::WITH)?)? {
                let b = bool_option(&k, &v)?;
                match k.as_str() {
                    "snapshot" => s.snapshot = Some(b),
                    "progress" => s.progress = b,
                    other => {
                        return Err(Error::invalid_with(
                            "22023",
                            format!("unknown SUBSCRIBE option {other}"),
                        )
                        .into())
                    }
                }
            }
        } else if p.parse_keywords(&[Keyword::AS, Keyword::OF]) {
            let t = p.next_token();
            let n = match &t.token {
                Token::Number(n, _) => n.parse::<u64>().ok(),
                _ => None,
            };
            s.as_of = Some(n.ok_or_else(|| {
                Error::parse(format!("AS OF expects an epoch number, found {}", t.token))
            })?);
        } else {
            break;
        }
    }
    Ok(s)
}

/// `TO STDOUT [WITH (FORMAT text|csv)]` after a COPY source.
fn parse_copy_to_stdout(p: &mut Parser) -> std::result::Result<CopyFormat, StmtError> {
    if !(p.parse_keyword(Keyword::TO) && p.parse_keyword(Keyword::STDOUT)) {
        return Err(Error::not_supported("COPY other than COPY ... TO STDOUT").into());
    }
    let mut format = CopyFormat::Text;
    if p.parse_keyword(Keyword::WITH) {
        p.prev_token();
        for (k, v) in options_map(&p.parse_options(Keyword::WITH)?)? {
            match (k.as_str(), v.to_lowercase().as_str()) {
                ("format", "text") => format = CopyFormat::Text,
                ("format", "csv") => format = CopyFormat::Csv,
                (k, v) => return Err(Error::not_supported(format!("COPY option {k} = {v}")).into()),
            }
        }
    }
    Ok(format)
}

fn copy_statement(stmt: ast::Statement) -> Result<Statement> {
    let ast::Statement::Copy {
        source,
        to,
        target,
        options,
        ..
    } = stmt
    else {
        return Err(Error::internal("not a COPY"));
    };
    if !to || !matches!(target, ast::CopyTarget::Stdout) {
        return Err(Error::not_supported(
            "COPY FROM and COPY to files; use INSERT, or COPY ... TO STDOUT",
        ));
    }
    let mut format = CopyFormat::Text;
    for o in options {
        match o {
            ast::CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => {
                format = CopyFormat::Csv
            }
            ast::CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => {
                format = CopyFormat::Text
            }
            other => return Err(Error::not_supported(format!("COPY option {other}"))),
        }
    }
    let query = match source {
        ast::CopySource::Query(q) => ast::Statement::Query(q),
        ast::CopySource::Table {
            table_name,
            columns,
        } => {
            let cols = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match parse_one(&format!("SELECT {cols} FROM {table_name}"))? {
                Statement::Query(q) => *q,
                _ => return Err(Error::internal("COPY table did not become a query")),
            }
        }
    };
    Ok(Statement::CopyQuery {
        query: Box::new(query),
        format,
    })
}

/// `DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR <query | SUBSCRIBE>`.
fn parse_declare(p: &mut Parser) -> std::result::Result<Statement, StmtError> {
    p.next_token();
    let name = normalize_ident(&p.parse_identifier()?);
    while !p.parse_keyword(Keyword::CURSOR) {
        let t = p.next_token();
        if matches!(t.token, Token::EOF | Token::SemiColon) {
            return Err(Error::parse("expected CURSOR in DECLARE").into());
        }
        if word_is(&t.token, "BINARY") {
            return Err(Error::not_supported("binary cursors").into());
        }
    }
    let mut hold = false;
    if p.parse_keyword(Keyword::WITH) {
        let _ = p.parse_keyword(Keyword::HOLD);
        hold = true;
    } else if p.parse_keyword(Keyword::WITHOUT) {
        let _ = p.parse_keyword(Keyword::HOLD);
    }
    if !p.parse_keyword(Keyword::FOR) {
        return Err(Error::parse("expected FOR in DECLARE ... CURSOR").into());
    }
    let body = if peek_is(p, 0, "SUBSCRIBE") {
        p.next_token();
        CursorBody::Subscribe(parse_subscribe_rest(p)?)
    } else {
        let q = p.parse_query()?;
        CursorBody::Query(Box::new(ast::Statement::Query(q)))
    };
    Ok(Statement::Declare { name, hold, body })
}

/// `FETCH [FORWARD | NEXT] [n | ALL] [FROM | IN] name [WITH (timeout = '1s')]`.
fn parse_fetch(p: &mut Parser) -> std::result::Result<Statement, StmtError> {
    p.next_token();
    let _ = p.parse_one_of_keywords(&[Keyword::FORWARD, Keyword::NEXT]);
    let mut count = Some(1);
    if p.parse_keyword(Keyword::ALL) {
        count = None;
    } else if let Token::Number(n, _) = &p.peek_token().token {
        count = Some(
            n.parse::<usize>()
                .map_err(|_| Error::parse(format!("bad FETCH count {n}")))?,
        );
        p.next_token();
    }
    let _ = p.parse_one_of_keywords(&[Keyword::FROM, Keyword::IN]);
    let name = normalize_ident(&p.parse_identifier()?);
    let mut timeout = None;
    if p.parse_keyword(Keyword::WITH) {
        p.prev_token();
        for (k, v) in options_map(&p.parse_options(Keyword::WITH)?)? {
            if k != "timeout" {
                return Err(
                    Error::invalid_with("22023", format!("unknown FETCH option {k}")).into(),
                );
            }
            let iv =
                crate::plan::functions::parse_interval(&v).map_err(|m| Error::data("22007", m))?;
            let ms = iv.days as i64 * 86_400_000 + iv.nanoseconds / 1_000_000;
            timeout = Some(std::time::Duration::from_millis(ms.max(0) as u64));
        }
    }
    Ok(Statement::Fetch {
        name,
        count,
        timeout,
    })
}

fn parse_show(p: &mut Parser) -> std::result::Result<Option<Statement>, StmtError> {
    let target = match &p.peek_nth_token(1).token {
        t if word_is(t, "TABLES") => Some((2, ShowTarget::Objects(ObjectKind::Table))),
        t if word_is(t, "STREAMS") => Some((2, ShowTarget::Objects(ObjectKind::Stream))),
        t if word_is(t, "SINKS") => Some((2, ShowTarget::Objects(ObjectKind::Sink))),
        t if word_is(t, "VIEWS") => Some((2, ShowTarget::Objects(ObjectKind::MaterializedView))),
        t if word_is(t, "MATERIALIZED") && peek_is(p, 2, "VIEWS") => {
            Some((3, ShowTarget::Objects(ObjectKind::MaterializedView)))
        }
        t if word_is(t, "ALL") => Some((2, ShowTarget::AllVariables)),
        t if word_is(t, "EPOCH") => Some((2, ShowTarget::Epoch)),
        t if word_is(t, "SUBSCRIPTIONS") => Some((2, ShowTarget::Subscriptions)),
        t if word_is(t, "SOURCES") => Some((2, ShowTarget::Sources)),
        t if word_is(t, "CHECKPOINTS") => Some((2, ShowTarget::Checkpoints)),
        t if word_is(t, "WATERMARKS") => Some((2, ShowTarget::Watermarks)),
        t if word_is(t, "SOURCE") && peek_is(p, 2, "ERRORS") => {
            p.next_token();
            p.next_token();
            p.next_token();
            let name = if p.parse_keyword(Keyword::FOR) {
                Some(normalize_ident(&p.parse_identifier()?))
            } else {
                None
            };
            return Ok(Some(Statement::Show(ShowTarget::SourceErrors(name))));
        }
        _ => None,
    };
    if let Some((n, target)) = target {
        for _ in 0..n {
            p.next_token();
        }
        return Ok(Some(Statement::Show(target)));
    }
    // SHOW <variable> [TO ...]: a session variable.
    p.next_token();
    let name = if p.parse_keywords(&[Keyword::TIME, Keyword::ZONE]) {
        "timezone".to_string()
    } else if p.parse_keywords(&[Keyword::TRANSACTION, Keyword::ISOLATION, Keyword::LEVEL]) {
        "transaction_isolation".to_string()
    } else {
        dotted_name(p)?
    };
    Ok(Some(Statement::Show(ShowTarget::Variable(name))))
}

fn dotted_name(p: &mut Parser) -> std::result::Result<String, StmtError> {
    let mut parts = vec![p.parse_identifier()?.value.to_lowercase()];
    while p.consume_token(&Token::Period) {
        parts.push(p.parse_identifier()?.value.to_lowercase());
    }
    Ok(parts.join("."))
}

fn parse_set(p: &mut Parser) -> std::result::Result<Statement, StmtError> {
    p.next_token();
    let _ = p.parse_one_of_keywords(&[Keyword::SESSION, Keyword::LOCAL]);
    let name = if p.parse_keywords(&[Keyword::TIME, Keyword::ZONE]) {
        "timezone".to_string()
    } else if peek_is(p, 0, "NAMES") {
        p.next_token();
        "client_encoding".to_string()
    } else if p.parse_keywords(&[Keyword::TRANSACTION])
        || p.parse_keywords(&[Keyword::CHARACTERISTICS])
    {
        // SET TRANSACTION ISOLATION LEVEL ...: accepted, eddy's reads are always
        // consistent snapshots.
        while !matches!(p.peek_token().token, Token::SemiColon | Token::EOF) {
            p.next_token();
        }
        return Ok(Statement::NoOp { tag: "SET".into() });
    } else {
        let n = dotted_name(p)?;
        if !(p.consume_token(&Token::Eq) || p.parse_keyword(Keyword::TO)) {
            return Err(ParserError::ParserError(format!(
                "Expected: = or TO, found: {} at Line: {}, Column: {}",
                p.peek_token().token,
                p.peek_token().span.start.line,
                p.peek_token().span.start.column
            ))
            .into());
        }
        n
    };
    let mut parts = vec![];
    while !matches!(p.peek_token().token, Token::SemiColon | Token::EOF) {
        let t = p.next_token().token;
        parts.push(match t {
            Token::SingleQuotedString(s) => s,
            Token::Comma => ",".into(),
            Token::Word(w) => w.value,
            other => other.to_string(),
        });
    }
    let value = parts.join(" ").replace(" , ", ", ");
    Ok(Statement::Set { name, value })
}

fn parse_drop(p: &mut Parser) -> std::result::Result<Statement, StmtError> {
    p.next_token();
    let kind = if p.parse_keyword(Keyword::TABLE) {
        ObjectKind::Table
    } else if peek_is(p, 0, "STREAM") {
        p.next_token();
        ObjectKind::Stream
    } else if p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
        || p.parse_keyword(Keyword::VIEW)
    {
        ObjectKind::MaterializedView
    } else if peek_is(p, 0, "SINK") {
        p.next_token();
        ObjectKind::Sink
    } else {
        let t = p.peek_token();
        return Err(ParserError::ParserError(format!(
            "Expected: TABLE, STREAM, MATERIALIZED VIEW or SINK after DROP, found: {} at Line: {}, Column: {}",
            t.token, t.span.start.line, t.span.start.column
        ))
        .into());
    };
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let names = p
        .parse_comma_separated(|p| p.parse_object_name(false))?
        .iter()
        .map(object_name)
        .collect::<Result<Vec<_>>>()?;
    let cascade = p.parse_keyword(Keyword::CASCADE);
    if !cascade {
        let _ = p.parse_keyword(Keyword::RESTRICT);
    }
    Ok(Statement::Drop(DropStatement {
        kind,
        names,
        if_exists,
        cascade,
    }))
}

/// `name (columns) [WITH (options)]` after `CREATE STREAM`.
fn parse_create_relation_rest(
    p: &mut Parser,
    kind: ObjectKind,
) -> std::result::Result<CreateRelation, StmtError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&p.parse_object_name(false)?)?;
    let (columns, constraints, watermark) = parse_columns_and_watermark(p)?;
    let options = if p.parse_keyword(Keyword::WITH) {
        p.prev_token();
        options_map(&p.parse_options(Keyword::WITH)?)?
    } else {
        Default::default()
    };
    Ok(CreateRelation {
        kind,
        name,
        if_not_exists,
        columns,
        constraints,
        options,
        watermark,
    })
}

/// Does the CREATE TABLE ahead declare a watermark? (Then eddy parses it itself:
/// sqlparser does not know `WATERMARK FOR`.)
fn create_table_has_watermark(p: &Parser) -> bool {
    let mut depth = 0usize;
    for n in 2..100_000 {
        match p.peek_nth_token(n).token {
            Token::EOF | Token::SemiColon => return false,
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return false;
                }
            }
            Token::Word(w) if depth == 1 && w.value.eq_ignore_ascii_case("WATERMARK") => {
                return peek_is(p, n + 1, "FOR");
            }
            _ => {}
        }
    }
    false
}

/// Column definitions, table constraints and the watermark clause of a CREATE.
type ColumnsAndWatermark = (
    Vec<ast::ColumnDef>,
    Vec<ast::TableConstraint>,
    Option<WatermarkClause>,
);

/// `(column definitions, constraints [, WATERMARK FOR col AS col - INTERVAL '...'])`,
/// as sqlparser's `parse_columns` plus the watermark clause.
fn parse_columns_and_watermark(
    p: &mut Parser,
) -> std::result::Result<ColumnsAndWatermark, StmtError> {
    let mut columns = vec![];
    let mut constraints = vec![];
    let mut watermark = None;
    if !p.consume_token(&Token::LParen) || p.consume_token(&Token::RParen) {
        return Ok((columns, constraints, watermark));
    }
    loop {
        if peek_is(p, 0, "WATERMARK") && peek_is(p, 1, "FOR") {
            p.next_token();
            p.next_token();
            let column = normalize_ident(&p.parse_identifier()?);
            p.expect_keyword(Keyword::AS)?;
            let expr = p.parse_expr()?;
            if watermark.is_some() {
                return Err(
                    Error::invalid_with("42601", "only one WATERMARK clause is allowed").into(),
                );
            }
            watermark = Some(WatermarkClause {
                lateness_us: watermark_lateness(&column, &expr)?,
                column,
            });
        } else if let Some(c) = p.parse_optional_table_constraint()? {
            constraints.push(c);
        } else if let Token::Word(_) = p.peek_token().token {
            columns.push(p.parse_column_def()?);
        } else {
            return Err(p
                .expected::<()>("column name or constraint definition", p.peek_token())
                .unwrap_err()
                .into());
        }
        let comma = p.consume_token(&Token::Comma);
        if p.consume_token(&Token::RParen) {
            break;
        }
        if !comma {
            return Err(p
                .expected::<()>("',' or ')' after column definition", p.peek_token())
                .unwrap_err()
                .into());
        }
    }
    Ok((columns, constraints, watermark))
}

/// The lateness of `WATERMARK FOR col AS <expr>`: `col` (none) or
/// `col - INTERVAL '...'`.
fn watermark_lateness(column: &str, expr: &ast::Expr) -> Result<i64> {
    let usage = || {
        Error::invalid_with(
            "42601",
            format!(
                "a watermark is written WATERMARK FOR {column} AS {column} - INTERVAL '5 seconds' \
                 (the event-time column minus the allowed lateness), not {expr}"
            ),
        )
    };
    let is_column =
        |e: &ast::Expr| matches!(e, ast::Expr::Identifier(i) if normalize_ident(i) == column);
    match expr {
        e if is_column(e) => Ok(0),
        ast::Expr::Nested(inner) => watermark_lateness(column, inner),
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Minus,
            right,
        } if is_column(left) => {
            let us = crate::plan::windows::interval_literal_micros(right, "watermark lateness")
                .map_err(|_| usage())?;
            if us < 0 {
                return Err(Error::invalid_with(
                    "22023",
                    "the watermark lateness cannot be negative",
                ));
            }
            Ok(us)
        }
        _ => Err(usage()),
    }
}

fn create_table(ct: ast::CreateTable) -> Result<CreateRelation> {
    if ct.query.is_some() {
        return Err(Error::not_supported(
            "CREATE TABLE ... AS SELECT; use CREATE MATERIALIZED VIEW",
        ));
    }
    if ct.temporary {
        return Err(Error::not_supported("temporary tables"));
    }
    let options = match &ct.table_options {
        ast::CreateTableOptions::With(opts) => options_map(opts)?,
        ast::CreateTableOptions::None => Default::default(),
        _ => return Err(Error::not_supported("table options other than WITH (...)")),
    };
    Ok(CreateRelation {
        kind: ObjectKind::Table,
        name: object_name(&ct.name)?,
        if_not_exists: ct.if_not_exists,
        columns: ct.columns,
        constraints: ct.constraints,
        options,
        watermark: None,
    })
}

fn create_view(v: ast::CreateView) -> Result<CreateView> {
    if !v.materialized {
        return Err(Error::not_supported(
            "non-materialized views; use CREATE MATERIALIZED VIEW, which eddy keeps up to date",
        ));
    }
    if !v.columns.is_empty() {
        return Err(Error::not_supported(
            "a column list in CREATE MATERIALIZED VIEW; alias the columns in the SELECT",
        ));
    }
    let options = match &v.options {
        ast::CreateTableOptions::With(opts) => options_map(opts)?,
        ast::CreateTableOptions::None => Default::default(),
        _ => return Err(Error::not_supported("view options other than WITH (...)")),
    };
    Ok(CreateView {
        name: object_name(&v.name)?,
        if_not_exists: v.if_not_exists,
        or_replace: v.or_replace,
        query: v.query,
        emit: EmitMode::Changes,
        options,
    })
}

fn options_map(opts: &[ast::SqlOption]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for o in opts {
        match o {
            ast::SqlOption::KeyValue { key, value } => {
                let v = match value {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
                            s.clone()
                        }
                        other => other.to_string(),
                    },
                    ast::Expr::Identifier(i) => i.value.clone(),
                    other => other.to_string(),
                };
                out.insert(key.value.to_lowercase(), v);
            }
            other => {
                return Err(Error::invalid_with(
                    "42601",
                    format!("invalid option {other}"),
                ))
            }
        }
    }
    Ok(out)
}

/// A boolean WITH option's value: `true`/`on`/`1` or `false`/`off`/`0` (22023 otherwise).
pub fn bool_option(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_lowercase().as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(Error::invalid_with(
            "22023",
            format!("option {name} must be true or false, not {value}"),
        )),
    }
}

/// The catalog name of an object: one identifier, folded to lower case unless quoted
/// (as in Postgres). `public.x` is accepted as `x`.
pub fn object_name(name: &ast::ObjectName) -> Result<String> {
    let parts: Vec<&ast::Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    let ident = match parts.as_slice() {
        [one] => one,
        [schema, one] if schema.value.eq_ignore_ascii_case("public") => one,
        _ => {
            return Err(Error::invalid_with(
                "3F000",
                format!(
                    "schema-qualified name {name} is not supported; eddy has one schema, public"
                ),
            ))
        }
    };
    Ok(normalize_ident(ident))
}

pub fn normalize_ident(ident: &ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Maps sqlparser's line/column locations to offsets in the query string.
struct LineIndex<'a> {
    sql: &'a str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        for (i, c) in sql.char_indices() {
            if c == '\n' {
                starts.push(i + 1);
            }
        }
        Self { sql, starts }
    }

    /// Byte offset of a (1-based line, 1-based column in characters) location.
    fn byte_offset(&self, loc: Location) -> usize {
        if loc.line == 0 {
            return self.sql.len();
        }
        let line_start = self
            .starts
            .get(loc.line as usize - 1)
            .copied()
            .unwrap_or(self.sql.len());
        let rest = &self.sql[line_start..];
        let col = (loc.column as usize).saturating_sub(1);
        line_start + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i)
    }

    /// 0-based character offset of a location.
    fn char_offset(&self, loc: Location) -> usize {
        let b = self.byte_offset(loc);
        self.sql[..b].chars().count()
    }
}

/// Turn a sqlparser error into a Postgres-style syntax error, with the position taken
/// from the "at Line: L, Column: C" sqlparser appends.
fn parse_error_in(e: ParserError, lines: &LineIndex) -> Error {
    let msg = match &e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => {
            return Error::invalid_with("54001", "statement is too complex: nesting is too deep")
        }
    };
    let (body, loc) = match msg.rfind(" at Line: ") {
        Some(i) => (&msg[..i], parse_location(&msg[i + 10..])),
        None => (msg.as_str(), None),
    };
    let mut position = loc.filter(|l| l.line > 0).map(|l| lines.char_offset(l) + 1);
    let message = match body
        .strip_prefix("Expected: ")
        .and_then(|b| b.rsplit_once(", found: "))
    {
        Some((expected, "EOF")) => {
            // Postgres points just past the end of the text.
            position = Some(lines.sql.chars().count() + 1);
            format!("syntax error at end of input (expected {expected})")
        }
        Some((expected, found)) => {
            format!("syntax error at or near \"{found}\" (expected {expected})")
        }
        None => format!("syntax error: {body}"),
    };
    Error::Parse { message, position }
}

fn parse_location(s: &str) -> Option<Location> {
    let (line, col) = s.split_once(", Column: ")?;
    let col: String = col.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some(Location {
        line: line.trim().parse().ok()?,
        column: col.parse().ok()?,
    })
}

/// A sqlparser error without query context.
pub fn parse_error(e: ParserError) -> Error {
    parse_error_in(e, &LineIndex::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_keeps_their_text() {
        let v = parse(
            "CREATE TABLE t (k INT PRIMARY KEY);  INSERT INTO t VALUES (1);\nSELECT * FROM t",
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].text, "INSERT INTO t VALUES (1)");
        assert_eq!(v[1].offset, 37);
        assert!(matches!(v[2].statement, Statement::Query(_)));
    }

    #[test]
    fn parses_eddy_ddl() {
        let s = parse_one(
            "CREATE STREAM s (a BIGINT, b TEXT) WITH (kafka_topic = 'x', format = 'json')",
        )
        .unwrap();
        match s {
            Statement::CreateStream(c) => {
                assert_eq!(c.name, "s");
                assert_eq!(c.columns.len(), 2);
                assert_eq!(c.options.get("kafka_topic").map(String::as_str), Some("x"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_one("SHOW MATERIALIZED VIEWS").unwrap(),
            Statement::Show(ShowTarget::Objects(ObjectKind::MaterializedView))
        ));
        assert!(matches!(
            parse_one("SHOW STREAMS").unwrap(),
            Statement::Show(ShowTarget::Objects(ObjectKind::Stream))
        ));
        assert!(matches!(
            parse_one("show transaction isolation level").unwrap(),
            Statement::Show(ShowTarget::Variable(_))
        ));
        assert!(matches!(
            parse_one("DROP STREAM IF EXISTS s CASCADE").unwrap(),
            Statement::Drop(DropStatement {
                kind: ObjectKind::Stream,
                if_exists: true,
                cascade: true,
                ..
            })
        ));
        assert!(matches!(
            parse_one("EXPLAIN v").unwrap(),
            Statement::ExplainObject { .. }
        ));
        assert!(matches!(
            parse_one("EXPLAIN CREATE MATERIALIZED VIEW v AS SELECT 1").unwrap(),
            Statement::ExplainCreateView(_)
        ));
        assert!(
            matches!(parse_one("DESCRIBE \"MyTable\"").unwrap(), Statement::Describe { name } if name == "MyTable")
        );
        assert!(
            matches!(parse_one("SET extra_float_digits = 3").unwrap(), Statement::Set { name, value } if name == "extra_float_digits" && value == "3")
        );
        assert!(
            matches!(parse_one("SET TIME ZONE 'UTC'").unwrap(), Statement::Set { name, value } if name == "timezone" && value == "UTC")
        );
    }

    #[test]
    fn syntax_errors_carry_a_postgres_position() {
        // As in Postgres, FORM is read as a column alias and "t" is the error.
        match parse("SELECT * FORM t") {
            Err(Error::Parse { message, position }) => {
                assert_eq!(message, "syntax error at or near \"t\"");
                assert_eq!(position, Some(15));
            }
            other => panic!("{other:?}"),
        }
        match parse("SELECT 1;\nSELECT (") {
            Err(Error::Parse { message, position }) => {
                assert!(message.contains("end of input"), "{message}");
                assert_eq!(position, Some(19));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn identifiers_fold_to_lower_case_unless_quoted() {
        match parse_one("CREATE TABLE Foo (\"Bar\" INT)").unwrap() {
            Statement::CreateTable(c) => assert_eq!(c.name, "foo"),
            other => panic!("{other:?}"),
        }
    }
}
