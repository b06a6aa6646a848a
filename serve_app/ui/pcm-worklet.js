// AudioWorklet: the microphone, mixed to mono, resampled from the context's rate to 16 kHz and
// converted to 16-bit PCM, posted in 60 ms frames (FunASR's client sends the same), with the
// RMS level of each frame for the meter.
//
// Resampling averages the input samples that fall into each output period (a box filter: a
// crude low-pass before decimation, enough for speech at 44.1/48 kHz → 16 kHz); a context
// slower than 16 kHz repeats samples.

class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.target = opts.targetRate || 16000;
    this.step = sampleRate / this.target; // input samples per output sample
    this.frame = Math.round((this.target * (opts.frameMs || 60)) / 1000);
    this.out = new Int16Array(this.frame);
    this.fill = 0;
    this.pos = 0;
    this.acc = 0;
    this.n = 0;
    this.last = 0;
    this.energy = 0;
  }

  emit(y) {
    const clamped = Math.max(-1, Math.min(1, y));
    this.out[this.fill++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.energy += clamped * clamped;
    if (this.fill === this.frame) {
      const level = Math.sqrt(this.energy / this.frame);
      this.port.postMessage({ pcm: this.out.buffer, level }, [this.out.buffer]);
      this.out = new Int16Array(this.frame);
      this.fill = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true; // no input connected yet
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      x /= channels;
      this.acc += x;
      this.n += 1;
      this.pos += 1;
      while (this.pos >= this.step) {
        this.pos -= this.step;
        if (this.n) {
          this.last = this.acc / this.n;
          this.acc = 0;
          this.n = 0;
        }
        this.emit(this.last);
      }
    }
    return true;
  }
}

registerProcessor("pcm-16k", Pcm16kProcessor);
