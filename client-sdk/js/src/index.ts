/**
 * `@tickwire/client`: a browser and Node client for the tickwire broker.
 * See docs/client-js.md.
 */
export { Client, toPayload, generateClientId, type ClientOptions, type ClientEvents, type ConnectionState, type StateInfo, type PublishOptions } from './client.js';
export { Subscription, DEFAULT_BUFFER_SIZE, type SubscribeOptions, type SubscriptionEvents, type PresenceEvent } from './subscription.js';
export { TickwireError, errorCodeName, isFinalClose, type ClientErrorCode } from './errors.js';
export type { Message, DecodeMode } from './message.js';
export type { Position, SubscribedInfo, PresenceEntry, PresenceInfo, JoinLeaveKind } from './codec.js';
export type { TransportKind, KeepaliveOptions } from './transports/transport.js';
export type { ReconnectOptions } from './backoff.js';
export { matches, patternProblem, topicProblem } from './topic.js';
export { encodeCursor, decodeCursor } from './cursor.js';
