#pragma once
// A generator of a second, agentic/RAG workload in Mooncake trace format, for
// checking that policies hold on traffic they were not tuned on (docs/replay.md).
//
// Requests arrive as a Poisson process. Each is one of:
//  - chat: a new session (one of `system_prompts` shared system prompts, Zipf
//    popular, plus a user message) or the next turn of a live session (its
//    previous prompt + the model's answer + a new user message), after an
//    exponential think time; a session continues with probability `p_continue`;
//  - rag: a system prompt, then `rag_docs_per_request` documents drawn Zipf from
//    a corpus in random order, then a question. The same document at a different
//    position is a different prefix, so prefix caching reuses only matching
//    orders (chunk reuse is not visible to prefix keys; DESIGN §1 "chunk");
//  - agent: a pipeline of `agent_steps` agents; step k's prompt is agent k's
//    system prompt, the task, and every earlier agent's message in order (a
//    message passed on appears at a new position for each agent).
// Content is tracked as segments; a block's id is assigned from (parent id,
// content of its 512 tokens), so equal ids at equal positions mean a shared prefix,
// exactly as in the Mooncake release. Deterministic for a given seed.
// Thread safety: pure function.

#include <cstdint>

#include "absl/status/statusor.h"
#include "bench/replay/trace.h"

namespace kvhub::replay {

struct WorkloadConfig {
  uint64_t seed = 1;
  double duration_s = 3600;        // trace length
  double rate_per_s = 3.0;         // mean arrivals per second
  double share_chat = 0.5;         // request mix (normalized)
  double share_rag = 0.3;
  double share_agent = 0.2;
  uint32_t system_prompts = 200;   // distinct shared system prompts
  uint32_t system_prompt_tokens = 1536;
  double zipf_s = 0.8;             // popularity skew of system prompts and documents
  double p_continue = 0.6;         // chat: probability of another turn
  double think_time_s = 180;       // chat: mean gap between turns
  uint32_t user_tokens_mean = 1500; // user message / question length (exponential)
  uint32_t output_tokens_mean = 350;
  uint32_t max_input_tokens = 64000;
  uint32_t rag_corpus_docs = 50000;
  uint32_t rag_doc_tokens = 1500;
  uint32_t rag_docs_per_request = 4;
  uint32_t agent_steps = 4;
  absl::Status Validate() const;
  // rate_per_s x duration_s at most this: ~100 bytes per block of a held trace.
  static constexpr double kMaxExpectedRequests = 2e6;
};

absl::StatusOr<Trace> GenerateWorkload(const WorkloadConfig& config);

}  // namespace kvhub::replay
