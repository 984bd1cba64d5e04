// Chat templates against Hugging Face's JavaScript reference: for every models/*-tokenizer, the
// model's real chat template rendered by `nanovllm tokenize --chat-file ... --chat-text` and by
// transformers.js' apply_chat_template (which renders with @huggingface/jinja and passes the
// variables transformers passes: messages, tools, documents, add_generation_prompt, the special
// tokens and the extra kwargs) must be byte-equal, over conversations with system prompts,
// multiple turns, tool definitions, tool calls and results, content parts, unicode and empty
// content, with add_generation_prompt on and off and enable_thinking unset, true and false.
// A conversation the template rejects must be rejected by both, ours naming the template line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const src = process.env.NANOVLLM_SOURCE_DIR ?? path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const bin = process.env.NANOVLLM_BINARY;
const npm = path.join(src, 'third_party', 'npm', 'node_modules');
const MODELS = ['qwen3', 'llama3_1', 'llama2', 'gemma3', 'deepseek_v3'];
const skip = !bin ? 'NANOVLLM_BINARY is not set' :
  !fs.existsSync(path.join(npm, '@huggingface', 'transformers')) ? 'third_party/npm is not installed (scripts/setup.sh)' :
  MODELS.some((m) => !fs.existsSync(path.join(src, 'models', `${m}-tokenizer`, 'tokenizer_config.json')))
    ? 'models/*-tokenizer are missing (scripts/setup.sh)' : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nanovllm-chat-'));

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Get the weather — in °C', parameters: {
    type: 'object', properties: { city: { type: 'string', description: 'City name, e.g. "Zürich"' }, days: { type: 'integer' } },
    required: ['city'] } } },
  { type: 'function', function: { name: 'search', description: 'Search the web',
    parameters: { type: 'object', properties: { q: { type: 'string' } } } } },
];
const CALL = { id: 'call_123456789', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris', days: 2 } } };
const CALL_S = { id: 'call_987654321', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Zürich"}' } };

const CONVERSATIONS = [
  [{ role: 'user', content: 'Hello!' }],
  [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' },
    { role: 'user', content: 'Bye' }],
  [{ role: 'user', content: '  spaced  \n' }, { role: 'assistant', content: '<think>\nhmm\n</think>\n\nok' },
    { role: 'user', content: '你好 🙂 é\u2028' }],
  [{ role: 'user', content: '' }, { role: 'assistant', content: '' }, { role: 'user', content: 'again' }],
  [{ role: 'system', content: 'sys' }, { role: 'user', content: 'weather?' },
    { role: 'assistant', content: '', tool_calls: [CALL] },
    { role: 'tool', content: 'sunny', tool_call_id: 'call_123456789' }, { role: 'assistant', content: 'It is sunny.' }],
  [{ role: 'user', content: 'w?' }, { role: 'assistant', content: '', tool_calls: [CALL_S, CALL] },
    { role: 'tool', content: '1', tool_call_id: 'call_987654321' }, { role: 'tool', content: '2', tool_call_id: 'call_123456789' }],
  [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a', reasoning_content: 'r' }, { role: 'user', content: 'q2' }],
  // Content as a list of parts: only Gemma 3's template handles it. The others print or join
  // it, where @huggingface/jinja and Python's Jinja2 part ways (JS concatenates a list to a string
  // and refuses `trim` on it; Python raises, or prints the list's repr): there
  // tests/test_chat_template.cpp holds us to transformers' (Python's) renderings instead.
  [{ role: 'user', content: [{ type: 'text', text: 'part one ' }, { type: 'text', text: 'two' }] }],
  [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }],
  [{ role: 'assistant', content: 'starts with assistant' }, { role: 'user', content: 'x' }],
  [{ role: 'system', content: 's1' }, { role: 'system', content: 's2' }, { role: 'user', content: 'u' }],
  [{ role: 'user', content: 'Q1' }, { role: 'assistant', content: '<think>\nt1\n</think>\n\nA1' },
    { role: 'user', content: '<tool_response>\nx\n</tool_response>' },
    { role: 'assistant', content: '\n\n<think>t2</think>A2' }],
];
const KWARGS = [{}, { enable_thinking: true }, { enable_thinking: false }];
const PARTS_ONLY_FOR = ['gemma3'];
const hasParts = (messages) => messages.some((m) => typeof m.content !== 'string');

async function reference(model) {
  const { PreTrainedTokenizer } = await import(path.join(npm, '@huggingface/transformers/dist/transformers.node.mjs'));
  const dir = path.join(src, 'models', `${model}-tokenizer`);
  const tj = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json')));
  const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json')));
  return { dir, config: tc, tok: new PreTrainedTokenizer(tj, tc) };
}

let files = 0;
function ours(dir, messages, tools, agp, kwargs) {
  const chat = path.join(tmp, `chat${files++}.json`);
  fs.writeFileSync(chat, JSON.stringify(messages));
  const args = ['tokenize', '--model', dir, '--chat-file', chat, '--chat-text', '--template-kwargs', JSON.stringify(kwargs)];
  if (tools) {
    const t = path.join(tmp, `tools${files++}.json`);
    fs.writeFileSync(t, JSON.stringify(tools));
    args.push('--tools-file', t);
  }
  if (!agp) args.push('--no-generation-prompt');
  try {
    return { text: JSON.parse(execFileSync(bin, args, { encoding: 'utf8', stdio: 'pipe' })).text };
  } catch (e) {
    return { error: e.stderr.toString() };
  }
}

for (const model of MODELS) {
  test(`${model}: chat template renders as transformers.js`, { skip }, async () => {
    const { dir, config, tok } = await reference(model);
    if (!config.chat_template) {  // Llama 2's tokenizer_config.json has none
      const r = ours(dir, CONVERSATIONS[0], null, true, {});
      assert.match(r.error ?? '', /the model has no chat template/, `expected the no-template error, got ${JSON.stringify(r)}`);
      assert.throws(() => tok.apply_chat_template(CONVERSATIONS[0], { tokenize: false }));
      return;
    }
    let rendered = 0, rejected = 0;
    for (const [i, messages] of CONVERSATIONS.entries()) {
      if (hasParts(messages) && !PARTS_ONLY_FOR.includes(model)) continue;
      for (const tools of [null, TOOLS]) {
        for (const agp of [true, false]) {
          for (const kwargs of KWARGS) {
            const what = `${model} conversation ${i} tools=${!!tools} add_generation_prompt=${agp} kwargs=${JSON.stringify(kwargs)}`;
            let want, wantError;
            try {
              want = tok.apply_chat_template(messages, { tokenize: false, tools, add_generation_prompt: agp, ...kwargs });
            } catch (e) {
              wantError = e.message;
            }
            const got = ours(dir, messages, tools, agp, kwargs);
            if (wantError === undefined) {
              assert.equal(got.error, undefined, `${what}: we failed where the reference rendered:\n${got.error}`);
              assert.equal(got.text, want, what);
              ++rendered;
            } else {
              assert.ok(got.error, `${what}: we rendered ${JSON.stringify(got.text)}, the reference failed: ${wantError}`);
              assert.match(got.error, /chat_template, line \d+: /, `${what}: our error names no line: ${got.error}`);
              // A message the template raises itself (raise_exception) must be the same one.
              if (config.chat_template.includes(wantError)) assert.ok(got.error.includes(wantError), `${what}: ${got.error}`);
              ++rejected;
            }
          }
        }
      }
    }
    assert.ok(rendered >= 60, `${model}: only ${rendered} conversations rendered`);
    if (model === 'gemma3') assert.ok(rejected >= 12, `gemma3 rejected only ${rejected} (roles must alternate)`);
  });
}

test('--chat-template overrides the model template, as a file or as text', { skip }, () => {
  const dir = path.join(src, 'models', 'llama2-tokenizer');
  const chat = path.join(tmp, 'override-chat.json');
  fs.writeFileSync(chat, JSON.stringify([{ role: 'user', content: 'hi' }]));
  const file = path.join(tmp, 'override.jinja');
  fs.writeFileSync(file, '{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}\n');
  const run = (t) => JSON.parse(execFileSync(bin, ['tokenize', '--model', dir, '--chat-file', chat, '--chat-text',
    '--chat-template', t], { encoding: 'utf8' })).text;
  assert.equal(run(file), '<s>[INST] hi [/INST]');
  // Inline text reads \n as a newline (vLLM's rule); one trailing newline is dropped, as Jinja2 does.
  assert.equal(run('{{ messages[0].content | upper }}\\n!\\n'), 'HI\n!');
  assert.throws(() => execFileSync(bin, ['tokenize', '--model', dir, '--chat-file', chat, '--chat-text',
    '--chat-template', 'no-such-file.jinja'], { stdio: 'pipe' }), (e) => /looks like a file path/.test(e.stderr.toString()));
});
