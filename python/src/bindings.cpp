// nanovllm._core: the C++ engine (include/nanovllm) for Python. The Python layer (python/nanovllm)
// gives it nano-vLLM's API; this file only converts types. The GIL is released while the engine
// works (constructing, stepping), so other Python threads run and signals are seen between steps.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "engine/tp_group.h"
#include "nanovllm/llm.h"
#include "tokenizer/tokenizer.h"

namespace py = pybind11;
using namespace nanovllm;

namespace {

py::object stop_reason(const StopReason& r) {
  if (const auto* id = std::get_if<int32_t>(&r)) return py::int_(*id);
  if (const auto* s = std::get_if<std::string>(&r)) return py::str(*s);
  return py::none();
}

// One position as vLLM's Logprob dict, {token_id: {"logprob", "rank", "decoded_token"}}: the
// chosen token first with its own rank, then the N most likely ranked 1..N (the chosen token, when
// among them, keeps its first place in the dict and takes that rank: vLLM's _make_logprob_dict).
py::dict position_dict(const LLM& llm, const PositionLogprobs& p) {
  py::dict d;
  auto put = [&](int32_t id, float logprob, int rank) {
    py::dict e;
    e["logprob"] = logprob;
    e["rank"] = rank;
    // vLLM decodes each token alone; None without a tokenizer, as vLLM's without detokenization.
    e["decoded_token"] = llm.has_tokenizer()
                             ? py::object(py::bytes(llm.tokenizer().decode({id}, false)).attr("decode")("utf-8", "replace"))
                             : py::object(py::none());
    d[py::int_(id)] = e;
  };
  put(p.token_id, p.logprob, p.rank);
  for (size_t k = 0; k < p.top.size(); ++k) put(p.top[k].token_id, p.top[k].logprob, static_cast<int>(k) + 1);
  return d;
}

// What the request asked for: logprobs and prompt_logprobs are None unless it did (vLLM's).
struct Wanted {
  bool logprobs = false, prompt_logprobs = false;
};

py::dict completion_dict(const LLM& llm, const CompletionOutput& c, Wanted want) {
  py::dict d;
  d["index"] = c.index;
  d["text"] = py::bytes(c.text).attr("decode")("utf-8", "replace");
  d["token_ids"] = c.token_ids;
  d["finish_reason"] = std::string(to_string(c.finish_reason));
  d["stop_reason"] = stop_reason(c.stop_reason);
  if (want.logprobs) {
    py::list l;
    double cumulative = 0;
    for (const PositionLogprobs& p : c.logprobs) {
      l.append(position_dict(llm, p));
      cumulative += p.logprob;
    }
    d["logprobs"] = l;
    d["cumulative_logprob"] = cumulative;
  } else {
    d["logprobs"] = py::none();
    d["cumulative_logprob"] = py::none();
  }
  return d;
}

py::dict request_dict(const LLM& llm, const RequestOutput& o, Wanted want) {
  py::dict d = completion_dict(llm, o.outputs.at(0), want);
  d.attr("pop")("index");
  d["prompt_token_ids"] = o.prompt_token_ids;
  if (want.prompt_logprobs) {
    py::list l;
    l.append(py::none());  // the first prompt token: nothing predicts it
    for (const PositionLogprobs& p : o.prompt_logprobs) l.append(position_dict(llm, p));
    d["prompt_logprobs"] = l;
  } else {
    d["prompt_logprobs"] = py::none();
  }
  d["num_cached_prompt_tokens"] = o.num_cached_prompt_tokens;
  if (o.outputs.size() > 1) {
    py::list all;
    for (const CompletionOutput& c : o.outputs) all.append(completion_dict(llm, c, want));
    d["outputs"] = all;
  }
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "nanovllm's C++ engine (use the nanovllm package, not this module)";
  // C++ argument errors are ValueError (the Python layer's contract); others RuntimeError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<EngineConfig>(m, "EngineConfig")
      .def(py::init<>())
      .def_readwrite("model", &EngineConfig::model)
      .def_readwrite("max_num_batched_tokens", &EngineConfig::max_num_batched_tokens)
      .def_readwrite("max_num_seqs", &EngineConfig::max_num_seqs)
      .def_readwrite("max_model_len", &EngineConfig::max_model_len)
      .def_readwrite("gpu_memory_utilization", &EngineConfig::gpu_memory_utilization)
      .def_readwrite("tensor_parallel_size", &EngineConfig::tensor_parallel_size)
      .def_readwrite("enforce_eager", &EngineConfig::enforce_eager)
      .def_readwrite("kvcache_block_size", &EngineConfig::kvcache_block_size)
      .def_readwrite("num_kvcache_blocks", &EngineConfig::num_kvcache_blocks)
      .def_readwrite("seed", &EngineConfig::seed)
      .def_readwrite("enable_prefix_caching", &EngineConfig::enable_prefix_caching)
      .def_readwrite("cpu_kvcache_space_gb", &EngineConfig::cpu_kvcache_space_gb)
      .def_readwrite("num_threads", &EngineConfig::num_threads)
      .def_readwrite("max_logprobs", &EngineConfig::max_logprobs)
      .def_readwrite("scheduling_policy", &EngineConfig::scheduling_policy)
      .def_readwrite("generation_config", &EngineConfig::generation_config)
      .def_readwrite("quantization", &EngineConfig::quantization)
      .def_readwrite("kv_cache_dtype", &EngineConfig::kv_cache_dtype)
      .def_readwrite("calculate_kv_scales", &EngineConfig::calculate_kv_scales)
      .def_readwrite("worker_command", &EngineConfig::worker_command)
      .def_property(
          "device", [](const EngineConfig& c) { return c.device ? std::string(to_string(*c.device)) : "auto"; },
          [](EngineConfig& c, const std::string& d) { c.device = parse_device(d); });

  // A tensor-parallel rank other than 0 (python -m nanovllm._worker, started by rank 0's engine).
  m.def(
      "_run_worker",
      [](const std::string& control, int rank) {
        py::gil_scoped_release release;
        return run_worker(control, rank);
      },
      py::arg("control"), py::arg("rank"));

  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init<>())
      .def_readwrite("temperature", &SamplingParams::temperature)
      .def_readwrite("top_p", &SamplingParams::top_p)
      .def_readwrite("top_k", &SamplingParams::top_k)
      .def_readwrite("min_p", &SamplingParams::min_p)
      .def_readwrite("repetition_penalty", &SamplingParams::repetition_penalty)
      .def_readwrite("presence_penalty", &SamplingParams::presence_penalty)
      .def_readwrite("frequency_penalty", &SamplingParams::frequency_penalty)
      .def_readwrite("logit_bias", &SamplingParams::logit_bias)
      .def_readwrite("min_tokens", &SamplingParams::min_tokens)
      .def_readwrite("logprobs", &SamplingParams::logprobs)
      .def_readwrite("prompt_logprobs", &SamplingParams::prompt_logprobs)
      .def_readwrite("max_tokens", &SamplingParams::max_tokens)
      .def_readwrite("ignore_eos", &SamplingParams::ignore_eos)
      .def_readwrite("seed", &SamplingParams::seed)
      .def_readwrite("n", &SamplingParams::n)
      .def_readwrite("stop", &SamplingParams::stop)
      .def_readwrite("stop_token_ids", &SamplingParams::stop_token_ids)
      .def_readwrite("include_stop_str_in_output", &SamplingParams::include_stop_str_in_output)
      .def_readwrite("skip_special_tokens", &SamplingParams::skip_special_tokens)
      .def_readwrite("priority", &SamplingParams::priority);

  py::class_<LLM>(m, "Engine")
      .def(py::init([](EngineConfig c) {
             py::gil_scoped_release release;
             return std::make_unique<LLM>(std::move(c));
           }),
           py::arg("config"))
      .def("add_request",
           [](LLM& llm, std::vector<int32_t> ids, const SamplingParams& p) { return llm.add_request(std::move(ids), p); })
      .def("step",
           [](LLM& llm) {
             std::vector<StepOutput> outs;
             {
               py::gil_scoped_release release;
               outs = llm.step();
             }
             py::list l;
             for (const StepOutput& o : outs)
               l.append(py::make_tuple(o.request_id, o.index, o.new_token_ids, o.finished));
             return l;
           })
      .def("is_finished", &LLM::is_finished)
      .def("abort_request", &LLM::abort_request)
      .def("default_sampling_params", &LLM::default_sampling_params)
      .def(
          "take_output",
          [](LLM& llm, int64_t id, bool logprobs, bool prompt_logprobs) {
            return request_dict(llm, llm.take_output(id), {logprobs, prompt_logprobs});
          },
          py::arg("request_id"), py::arg("logprobs") = false, py::arg("prompt_logprobs") = false)
      .def("has_tokenizer", &LLM::has_tokenizer)
      .def("encode", &LLM::encode, py::arg("text"), py::arg("add_special_tokens") = true)
      .def("decode",
           [](const LLM& llm, const std::vector<int32_t>& ids, bool skip_special) {
             return py::bytes(llm.tokenizer().decode(ids, skip_special)).attr("decode")("utf-8", "replace");
           })
      .def("apply_chat_template",
           [](const LLM& llm, const std::vector<std::map<std::string, std::string>>& messages,
              bool add_generation_prompt, bool enable_thinking) {
             std::vector<ChatMessage> msgs;
             for (const auto& m : messages) {
               auto get = [&](const char* k) {
                 auto it = m.find(k);
                 return it == m.end() ? std::string() : it->second;
               };
               if (!m.count("role")) throw std::invalid_argument("chat message without a 'role'");
               msgs.push_back({get("role"), get("content"), get("reasoning_content")});
             }
             return llm.apply_chat_template(msgs, add_generation_prompt, enable_thinking);
           })
      .def("vocab_size", &LLM::vocab_size)
      .def("start_profile", &LLM::start_profile)
      .def("stop_profile", &LLM::stop_profile)
      .def("config", [](const LLM& llm) { return llm.config(); })
      .def("stats", [](const LLM& llm) {
        const EngineStats s = llm.stats();
        py::dict d;
        d["prompt_tokens"] = s.prompt_tokens;
        d["generation_tokens"] = s.generation_tokens;
        d["prefill_tokens"] = s.prefill_tokens;
        d["decode_tokens"] = s.decode_tokens;
        d["prefill_seconds"] = s.prefill_seconds;
        d["decode_seconds"] = s.decode_seconds;
        d["num_running"] = s.num_running;
        d["num_waiting"] = s.num_waiting;
        d["num_free_blocks"] = s.num_free_blocks;
        d["num_kvcache_blocks"] = s.num_kvcache_blocks;
        d["device"] = s.device;
        return d;
      });
}
