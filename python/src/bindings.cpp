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

py::dict completion_dict(const CompletionOutput& c) {
  py::dict d;
  d["index"] = c.index;
  d["text"] = py::bytes(c.text).attr("decode")("utf-8", "replace");
  d["token_ids"] = c.token_ids;
  d["finish_reason"] = std::string(to_string(c.finish_reason));
  d["stop_reason"] = stop_reason(c.stop_reason);
  return d;
}

py::dict request_dict(const RequestOutput& o) {
  py::dict d = completion_dict(o.outputs.at(0));
  d.attr("pop")("index");
  d["prompt_token_ids"] = o.prompt_token_ids;
  d["num_cached_prompt_tokens"] = o.num_cached_prompt_tokens;
  if (o.outputs.size() > 1) {
    py::list all;
    for (const CompletionOutput& c : o.outputs) all.append(completion_dict(c));
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
      .def_property(
          "device", [](const EngineConfig& c) { return c.device ? std::string(to_string(*c.device)) : "auto"; },
          [](EngineConfig& c, const std::string& d) { c.device = parse_device(d); });

  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init<>())
      .def_readwrite("temperature", &SamplingParams::temperature)
      .def_readwrite("max_tokens", &SamplingParams::max_tokens)
      .def_readwrite("ignore_eos", &SamplingParams::ignore_eos)
      .def_readwrite("seed", &SamplingParams::seed)
      .def_readwrite("n", &SamplingParams::n)
      .def_readwrite("stop", &SamplingParams::stop)
      .def_readwrite("stop_token_ids", &SamplingParams::stop_token_ids)
      .def_readwrite("include_stop_str_in_output", &SamplingParams::include_stop_str_in_output)
      .def_readwrite("skip_special_tokens", &SamplingParams::skip_special_tokens);

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
      .def("take_output", [](LLM& llm, int64_t id) { return request_dict(llm.take_output(id)); })
      .def("has_tokenizer", &LLM::has_tokenizer)
      .def("encode", &LLM::encode)
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
