//! A request's output rules and each sequence's progress through them.
//!
//! An [`OutputPlan`] is compiled once per request, at submission where the
//! model is ready (else when the worker admits it): the grammar the output
//! follows from its first token (a response format, or the calls a caller
//! requires), and where the request offers tools, the model's call format
//! and the grammar a call the model chooses to make follows from its first
//! marker on. An [`OutputState`] carries one sequence through it: the
//! token mask of its next step, advancing with each token, and the split of
//! its text into content and tool calls.

use std::sync::Arc;

use crate::{
    constraint::{Advance, Compiler, Constraint, Grammar, MaskRows},
    error::{Error, Result},
    tokenizer::{ChatMessage, ChatTemplate, Tokenizer},
    tools::{calls_grammar, CallStream, Piece, ToolCall, ToolChoice, ToolFormat, ToolUse},
};

use super::GenerateParams;

/// What a request's output must be, compiled for its model.
#[derive(Debug)]
pub struct OutputPlan {
    /// Followed from the first token.
    grammar: Option<Arc<Grammar>>,
    /// The model's call format and the offered tools' names, where the request offers tools.
    calls: Option<(ToolFormat, Vec<String>)>,
    /// Followed from the start of a call the model chooses to make, per
    /// variant of the format ([`ToolFormat::variants`]).
    on_call: Vec<Arc<Grammar>>,
}

impl OutputPlan {
    /// The plan of `params` on a model, `None` for free text. Errors
    /// (INVALID_ARGUMENT) name the field: a schema, pattern or grammar that
    /// does not compile, a tool's parameters that are not a usable schema.
    pub fn compile(params: &GenerateParams, compiler: &Compiler, template: Option<&ChatTemplate>, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        let tools = params.tools.as_ref().filter(|t| t.offers_calls());
        let mut plan = OutputPlan { grammar: None, calls: None, on_call: Vec::new() };
        if let Some(format) = &params.response_format {
            plan.grammar = Some(compiler.response_format(format, "responseFormat")?);
        }
        if let Some(tools) = tools {
            let format = template.and_then(|t| ToolFormat::of_template(t.source())).unwrap_or(crate::tools::HERMES);
            let grammar = |format: &ToolFormat, offered: &[crate::tools::Tool], several: bool| -> Result<Arc<Grammar>> {
                let lark = calls_grammar(format, offered, several, tokenizer, "tools")?;
                compiler.lark(&lark, "tools")
            };
            match &tools.choice {
                ToolChoice::Required => plan.grammar = Some(grammar(&format, &tools.tools, tools.parallel)?),
                ToolChoice::Named(name) => {
                    let Some(tool) = tools.tools.iter().find(|t| &t.name == name) else {
                        return Err(Error::invalid("toolChoice.name", format!("'{name}' is not one of the tools")));
                    };
                    plan.grammar = Some(grammar(&format, std::slice::from_ref(tool), false)?);
                }
                ToolChoice::Auto => {
                    plan.on_call = format.variants().iter().map(|v| grammar(v, &tools.tools, tools.parallel)).collect::<Result<_>>()?;
                }
                ToolChoice::None => {}
            }
            plan.calls = Some((format, tools.tools.iter().map(|t| t.name.clone()).collect()));
        }
        Ok((plan.grammar.is_some() || plan.calls.is_some()).then_some(plan))
    }

    /// A sequence at the start of its output.
    pub fn start(&self) -> OutputState {
        OutputState {
            constraint: self.grammar.as_ref().map(|g| g.start()),
            on_call: self.on_call.clone(),
            calls: self.calls.as_ref().map(|(format, names)| CallStream::new(*format, names.clone())),
        }
    }
}

/// One sequence's place in its output rules.
pub struct OutputState {
    constraint: Option<Constraint>,
    /// The grammars a call starts (per variant), until one does.
    on_call: Vec<Arc<Grammar>>,
    calls: Option<CallStream>,
}

impl OutputState {
    /// Whether the sequence's next token may need a mask: it follows a
    /// grammar, or may start a call that does. A step whose rows all say no
    /// is picked exactly as without constraints.
    pub fn masks(&self) -> bool {
        self.constraint.is_some() || !self.on_call.is_empty()
    }

    /// Whether guessed tokens can be checked against the rules before they
    /// are verified ([`OutputState::masks_ahead`]): a grammar from the first
    /// token and no calls to parse (a call's grammar begins only where the
    /// text shows the call, so its sequence decodes without guesses).
    pub fn speculates(&self) -> bool {
        self.calls.is_none() && self.on_call.is_empty()
    }

    /// The masks of a speculative step ([`Constraint::masks_ahead`]): how
    /// many of `drafts` the rules allow in a row; `masks` gets one row per
    /// position up to the one after them.
    pub fn masks_ahead(&mut self, drafts: &[u32], masks: &mut MaskRows) -> Result<usize> {
        match &mut self.constraint {
            Some(c) => c.masks_ahead(drafts, masks),
            None => Ok(drafts.len()),
        }
    }

    /// Writes the tokens allowed next into `row`; false, and `row` left as
    /// it is (allowing everything), while no grammar applies.
    pub fn mask_into(&mut self, row: &mut [u32]) -> Result<bool> {
        match &mut self.constraint {
            Some(c) => c.mask_into(row).map(|()| true),
            None => Ok(false),
        }
    }

    /// Advances the grammar by a generated token.
    pub fn advance(&mut self, token: u32) -> Result<Advance> {
        match &mut self.constraint {
            Some(c) => c.advance(token),
            None => Ok(Advance::Open),
        }
    }

    /// Splits generated text into content and call deltas. Where it starts
    /// a call the model chose to make, the call's grammar applies from here
    /// on (it replays the call's text so far; a call that already left the
    /// grammar stays unconstrained and is parsed as written).
    pub fn text(&mut self, text: &str, tokenizer: &Tokenizer) -> Piece {
        let Some(calls) = &mut self.calls else { return Piece { text: text.to_string(), ..Piece::default() } };
        let piece = calls.push(text);
        if let Some((variant, region)) = &piece.began {
            let on_call = std::mem::take(&mut self.on_call);
            let Some(grammar) = on_call.get(*variant) else { return piece };
            let mut constraint = grammar.start();
            match tokenizer.encode_continuation(region) {
                Ok(tokens) if constraint.replay(&tokens) => self.constraint = Some(constraint),
                _ => tracing::debug!("a tool call began outside its grammar; it is parsed as written"),
            }
        }
        piece
    }

    /// The end: content still held back, and the complete calls.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        match &mut self.calls {
            Some(calls) => calls.finish(),
            None => (String::new(), Vec::new()),
        }
    }
}

/// The prompt text of `messages` with a request's tools: rendered with the
/// tools by a template that shows them; a template that does not is given
/// them in a system message, with the default call format.
pub fn render(template: &ChatTemplate, messages: &[ChatMessage], tools: Option<&ToolUse>) -> Result<String> {
    match tools.filter(|t| t.offers_calls()) {
        None => template.render(messages),
        Some(tools) if template.tool_support().shows_tools => template.render_with_tools(messages, &tools.template_value()),
        Some(tools) => {
            let mut messages = messages.to_vec();
            let description = tools.describe();
            match messages.first_mut() {
                Some(first) if first.role == "system" => first.content = format!("{}\n\n{description}", first.content),
                _ => messages.insert(0, ChatMessage::new("system", description)),
            }
            template.render(&messages)
        }
    }
}
