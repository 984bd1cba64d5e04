// Python's str operations over UTF-8 strings, for the string methods and filters chat templates
// call (strip, split, title, ...) and for Python's repr() of strings and floats. Python counts
// and indexes code points, so these work on code points too.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm::jinja::pystr {

std::u32string decode(std::string_view s);  // s must be valid UTF-8
std::string encode(std::u32string_view s);
size_t length(std::string_view s);  // in code points

bool is_space(char32_t c);  // Python's str.isspace() for one character

// str.strip / lstrip / rstrip: `chars` absent strips whitespace.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// str.split / rsplit: `sep` absent splits on runs of whitespace and drops empty ends.
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                               bool from_right);
std::vector<std::string> splitlines(std::string_view s, bool keepends);
std::string replace(std::string_view s, std::string_view from, std::string_view to, int64_t count);

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string title(std::string_view s);       // str.title()
std::string capitalize(std::string_view s);  // str.capitalize(): first upper, the rest lower
std::string swapcase(std::string_view s);
bool is_lower(std::string_view s);  // str.islower(): has cased characters, all lower
bool is_upper(std::string_view s);

std::string repr(std::string_view s);  // Python's repr() of a str: quotes and escapes
std::string float_repr(double d);      // Python's repr() of a float: 1.0, 0.1, 1e-05, 1e+16, inf

}  // namespace nanovllm::jinja::pystr
