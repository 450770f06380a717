// Placeholder for the JS client bundle (client-sdk/js, `npm run bundle`):
// replaced by the committed bundle when the jsclient branch merges.
export class Client {
  constructor() {
    throw new Error('tickwire-client.js is a placeholder: build the JS client bundle');
  }
}
export class TickwireError extends Error {}
