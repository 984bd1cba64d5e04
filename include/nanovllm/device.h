// DeviceKind: where an engine runs (and where a tensor lives).
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace nanovllm {

enum class DeviceKind : uint8_t { cpu, cuda };

std::string_view to_string(DeviceKind d);  // "cpu" or "cuda"
// "cpu" or "cuda"; "auto" gives nullopt (decided at start-up). Throws std::invalid_argument
// naming the value for anything else.
std::optional<DeviceKind> parse_device(std::string_view name);

}  // namespace nanovllm
