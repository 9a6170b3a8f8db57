//! One sequence's place in its grammar: which tokens may come next (a
//! bitmask over the vocabulary), and advancing by the token that came.

use llguidance::{CancellationHandle, Matcher};

use super::{
    budget::{self, MASK_TIME_LIMIT},
    MaskRows,
};
use crate::error::{Error, ErrorCode, Result};

/// A sequence's constraint: llguidance's matcher for its grammar.
pub struct Constraint {
    matcher: Matcher,
    /// Cancels the matcher's work when a token takes too long.
    cancel: CancellationHandle,
}

/// What a token did to a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// More may follow.
    Open,
    /// The grammar is complete and nothing can extend it: the output ends here.
    Complete,
}

impl Constraint {
    pub(super) fn new(matcher: Matcher) -> Self {
        let matcher = matcher.into_cancellable();
        let cancel = matcher.cancellation_handle().unwrap_or_default();
        Constraint { matcher, cancel }
    }

    /// Writes the tokens allowed next into `row` (bit `t % 32` of word
    /// `t / 32` for token `t`); words past the grammar's vocabulary are zero.
    /// The end-of-turn tokens are allowed only where the grammar accepts.
    pub fn mask_into(&mut self, row: &mut [u32]) -> Result<()> {
        let armed = budget::arm(self.cancel.clone(), MASK_TIME_LIMIT);
        let mask = self.matcher.compute_mask().map_err(|e| failure(&e.to_string()));
        drop(armed);
        let mask = mask?;
        let words = mask.as_slice();
        let n = words.len().min(row.len());
        row[..n].copy_from_slice(&words[..n]);
        row[n..].fill(0);
        Ok(())
    }

    /// Advances by `token`, which the last mask allowed.
    pub fn advance(&mut self, token: u32) -> Result<Advance> {
        let armed = budget::arm(self.cancel.clone(), MASK_TIME_LIMIT);
        let advanced = self.matcher.consume_token(token).map_err(|e| failure(&e.to_string()));
        drop(armed);
        advanced?;
        Ok(if self.matcher.is_stopped() { Advance::Complete } else { Advance::Open })
    }

    /// The masks of a speculative step's positions: row `i` of `masks` for
    /// the token after `drafts[..i]`, for as many drafts as the grammar
    /// allows in a row (the count returned), with the row after them; a
    /// draft that completes the grammar is the last (its sequence ends
    /// there, so the row after it allows everything). The constraint is
    /// left where it was.
    pub fn masks_ahead(&mut self, drafts: &[u32], masks: &mut MaskRows) -> Result<usize> {
        let mut consumed = 0;
        let outcome = loop {
            if let Err(e) = self.mask_into(masks.row_mut(consumed)) {
                break Err(e);
            }
            if consumed == drafts.len() || !masks.allows(consumed, drafts[consumed] as usize) {
                break Ok(());
            }
            match self.advance(drafts[consumed]) {
                Ok(_) => consumed += 1,
                Err(e) => break Err(e),
            }
            if self.matcher.is_stopped() {
                break Ok(());
            }
        };
        if consumed > 0 {
            self.matcher.rollback(consumed).map_err(|e| failure(&e.to_string()))?;
        }
        outcome.map(|()| consumed)
    }

    /// Advances by tokens the model wrote before the constraint began (a
    /// tool call's opening marker): false, and the constraint is unusable,
    /// when the grammar does not start that way.
    pub fn replay(&mut self, tokens: &[u32]) -> bool {
        matches!(self.matcher.try_consume_tokens(tokens), Ok(n) if n == tokens.len()) && !self.matcher.is_error()
    }

    /// Whether the output may end here.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

/// A matcher failure: past one of llguidance's limits or the time limit of
/// a token (the grammar is too expensive to follow: GRAMMAR_TOO_COMPLEX), or
/// a token the grammar did not allow (a bug: INTERNAL).
fn failure(message: &str) -> Error {
    let m = message.to_lowercase();
    let message = message.lines().next().unwrap_or_default();
    if m.contains("cancelled") {
        let ms = MASK_TIME_LIMIT.as_millis();
        Error::new(ErrorCode::GrammarTooComplex, format!("the output's grammar is too expensive to follow: one token took longer than {ms} ms"))
    } else if ["lexer error", "parser error", "too complex", "too many", "items", "fuel", "limit"].iter().any(|k| m.contains(k)) {
        Error::new(ErrorCode::GrammarTooComplex, format!("the output's grammar is too expensive to follow: {message}"))
    } else {
        Error::internal(format!("constrained decoding: {message}"))
    }
}
