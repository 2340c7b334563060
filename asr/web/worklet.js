// Runs on the audio thread: forwards each 128-sample render quantum of the microphone (channel 0,
// float32 at the AudioContext's rate) to the page, which sends it to the server as 16-bit PCM.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("capture", Capture);
